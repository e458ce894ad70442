//! An HTTP server speaking OpenAI's, Anthropic's and Ollama's APIs: [`llama::server`] behind
//! command-line flags. Point the official clients at it by changing only their base URL.
//!
//! ```text
//! cargo run --release --example server
//! cargo run --release --example server -- --model chat=/models/a.gguf --model code=/models/b.gguf \
//!     --parallel 8 --keep-alive 10m --max-loaded-models 1 --api-key secret
//! ```
//!
//! With no `--model`, the default model (SmolLM2-135M-Instruct, served as `smollm2`) is fetched
//! on first use. Every flag can also be set through the environment variable shown by `--help`.
//! The README's "Server" section maps them to Ollama's.

use std::future::IntoFuture;
use std::process::ExitCode;
use std::time::Duration;

use axum::serve::ListenerExt;
use clap::Parser;
use llama::server::{KeepAlive, Server, ServerBuilder};
use llama::{FlashAttention, KvCacheType};

#[derive(Debug, Parser)]
#[command(about = "A server for GGUF models speaking the OpenAI, Anthropic and Ollama APIs", version)]
struct Cli {
    /// Address to listen on: loopback by default, 0.0.0.0 for every interface.
    #[arg(long, env = "LLAMA_SERVER_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the URL printed at start says which).
    #[arg(long, env = "LLAMA_SERVER_PORT", default_value_t = 8080)]
    port: u16,
    /// A model to serve: NAME=PATH, a path (named after its file), or a known short name
    /// (smollm2, gemma3, ...; fetched on first use). Repeatable; the first is the default.
    #[arg(long = "model", short = 'm', env = "LLAMA_SERVER_MODELS", value_delimiter = ',', value_name = "NAME=PATH")]
    models: Vec<String>,
    /// A multimodal projector for a served model: NAME=PATH (NAME as in --model; a bare PATH
    /// pairs with the default model). Its requests may then carry images (`image_url` data URLs)
    /// and audio (`input_audio`). Repeatable.
    #[arg(long = "mmproj", env = "LLAMA_SERVER_MMPROJ", value_delimiter = ',', value_name = "NAME=PATH")]
    projectors: Vec<String>,
    /// Requests each model decodes together (its engine's slots).
    #[arg(long, env = "LLAMA_SERVER_PARALLEL", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallel: u16,
    /// KV cache size in tokens per model, shared by its slots (capped at the model's training context).
    #[arg(long, env = "LLAMA_SERVER_CTX", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(64..))]
    ctx: u32,
    /// Threads per model (default: the available cores).
    #[arg(long, env = "LLAMA_SERVER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// KV cache element type of K and V: f16, q8_0, q4_0, ... (quantized V needs flash attention).
    #[arg(long, env = "LLAMA_SERVER_CACHE_TYPE", default_value = "f16")]
    cache_type: KvCacheType,
    /// Flash attention: on, off or auto (llama.cpp's choice per backend).
    #[arg(long, env = "LLAMA_SERVER_FLASH_ATTN", default_value = "auto")]
    flash_attn: FlashAttention,
    /// How long an idle model stays loaded: 5m, 30s, 1h30m, seconds; 0 unloads after each reply,
    /// a negative value keeps it forever. A request's `keep_alive` overrides it.
    #[arg(long, env = "LLAMA_SERVER_KEEP_ALIVE", default_value = "5m", allow_hyphen_values = true)]
    keep_alive: KeepAlive,
    /// Models loaded at once; loading another evicts the least recently used idle one.
    #[arg(long, env = "LLAMA_SERVER_MAX_LOADED_MODELS", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    max_loaded_models: u16,
    /// Seconds a request waits for its model to load, or for room to load it (then 503).
    #[arg(long, env = "LLAMA_SERVER_LOAD_WAIT", default_value_t = 120)]
    load_wait: u64,
    /// Requests that may wait for a slot, per model; beyond, 503 with Retry-After. Every
    /// request passes through the queue, so it holds at least one.
    #[arg(long, env = "LLAMA_SERVER_MAX_QUEUE", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_queue: u32,
    /// Host RAM per model, in MiB, for the prefix cache's second tier: a conversation's KV is
    /// saved there when its slot is needed by another and restored when it comes back (0: off).
    #[arg(long, env = "LLAMA_SERVER_CACHE_RAM", default_value_t = 2048)]
    cache_ram: usize,
    /// Seconds a client may read nothing from a stream before its request is cancelled and its
    /// slot freed (0: wait forever).
    #[arg(long, env = "LLAMA_SERVER_STALL_TIMEOUT", default_value_t = 60)]
    stall_timeout: u64,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, env = "LLAMA_SERVER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Largest request body in bytes (beyond: 413).
    #[arg(long, env = "LLAMA_SERVER_MAX_BODY", default_value_t = 4 << 20)]
    max_body: usize,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    #[arg(long, env = "LLAMA_SERVER_GRACE", default_value_t = 10)]
    grace: u64,
    /// Origins web pages may call from (CORS), or `*`; none by default.
    #[arg(long = "allow-origin", env = "LLAMA_SERVER_ORIGINS", value_delimiter = ',')]
    origins: Vec<String>,
    /// Host names requests may address besides loopback ones (DNS-rebinding guard), or `*`.
    /// Listening on every interface allows any unless this is given.
    #[arg(long = "allow-host", env = "LLAMA_SERVER_HOSTS", value_delimiter = ',')]
    hosts: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let server = match configure(&cli).map_err(|e| e.to_string()).and_then(|b| b.build().map_err(|e| e.to_string())) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(&cli, server));
    // A model still loading on a blocking thread must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

fn configure(cli: &Cli) -> Result<ServerBuilder, String> {
    let mut b = Server::builder()
        .parallel(cli.parallel.into())
        .ctx(cli.ctx as usize)
        .cache_type(cli.cache_type, cli.cache_type)
        .flash_attention(cli.flash_attn)
        .keep_alive(cli.keep_alive)
        .max_loaded_models(cli.max_loaded_models.into())
        .load_wait(Duration::from_secs(cli.load_wait))
        .max_queue(cli.max_queue as usize)
        .cache_ram(cli.cache_ram.saturating_mul(1 << 20))
        .stall_timeout((cli.stall_timeout > 0).then(|| Duration::from_secs(cli.stall_timeout)))
        .max_body(cli.max_body)
        .allow_origins(&cli.origins)
        .allow_hosts(&cli.hosts);
    let unspecified = cli.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    b = match (unspecified, cli.hosts.is_empty()) {
        (true, true) => b.allow_hosts(["*"]),
        _ => b.allow_hosts([cli.host.trim_start_matches('[').trim_end_matches(']')]),
    };
    if let Some(t) = cli.threads {
        b = b.threads(t.into());
    }
    if let Some(key) = &cli.api_key {
        b = b.api_key(key);
    }
    let mut names = Vec::new();
    if cli.models.is_empty() {
        let path = llama_examples::models::default_model().map_err(|e| e.to_string())?;
        b = b.model("smollm2", path);
        names.push("smollm2".to_string());
    }
    for arg in &cli.models {
        let (name, path) = llama_examples::models::serve_arg(arg)?;
        names.push(name.clone());
        b = b.model(name, path);
    }
    for arg in &cli.projectors {
        let (name, path) = match arg.split_once('=') {
            Some((name, path)) => (name.to_string(), path.to_string()),
            None => (names.first().cloned().unwrap_or_default(), arg.clone()),
        };
        b = b.projector(name, path);
    }
    Ok(b)
}

async fn serve(cli: &Cli, server: Server) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind((cli.host.as_str(), cli.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}:{}: {e}", cli.host, cli.port);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map_or_else(|_| format!("{}:{}", cli.host, cli.port), |a| a.to_string());
    println!("serving {} at http://{addr}/v1", server.models().join(", "));
    tokio::spawn(server.background());
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    // Each SSE chunk is a small write: without NODELAY, Nagle's algorithm holds it until the
    // client acknowledges the previous one, and tokens reach clients late and in clumps.
    let listener = listener.tap_io(|tcp| drop(tcp.set_nodelay(true)));
    let grace = cli.grace;
    let serving = axum::serve(listener, server.router())
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            eprintln!("shutting down: no new connections; in-flight requests get {grace}s");
            let _ = stopping_tx.send(());
        })
        .into_future();
    let grace_over = async move {
        match stopping.await {
            Ok(()) => tokio::time::sleep(Duration::from_secs(grace)).await,
            Err(_) => std::future::pending().await,
        }
    };
    let code = tokio::select! {
        result = serving => result.map_or_else(|e| { eprintln!("error: {e}"); ExitCode::FAILURE }, |()| ExitCode::SUCCESS),
        () = grace_over => {
            eprintln!("grace period over: cancelling what is still running");
            ExitCode::SUCCESS
        }
    };
    let _ = tokio::task::spawn_blocking(move || server.shutdown()).await;
    eprintln!("stopped");
    code
}

async fn shutdown_signal() {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => drop(s.recv().await),
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
