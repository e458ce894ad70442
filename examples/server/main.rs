//! An OpenAI-compatible HTTP server on the serving engine: point the official OpenAI clients at
//! it by changing only their base URL.
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

mod access_log;
mod auth;
mod body;
mod error;
mod generation;
mod keep_alive;
mod metrics;
mod models;
mod openai;
mod prompt;
mod routes;
mod sampling;
mod tools;

use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, Method};
use axum::serve::ListenerExt;
use clap::Parser;
use tower_http::cors::{AllowOrigin, CorsLayer};

use body::BodyLimit;
use keep_alive::KeepAlive;
use metrics::HttpMetrics;
use models::{EngineConfig, ModelSpec, Registry};
use routes::AppState;

#[derive(Debug, Parser)]
#[command(about = "An OpenAI-compatible server for GGUF models", version)]
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
    /// Requests each model decodes together (its engine's slots).
    #[arg(long, env = "LLAMA_SERVER_PARALLEL", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallel: u16,
    /// KV cache size in tokens per model, shared by its slots (capped at the model's training context).
    #[arg(long, env = "LLAMA_SERVER_CTX", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(64..))]
    ctx: u32,
    /// Threads per model (default: the available cores).
    #[arg(long, env = "LLAMA_SERVER_THREADS", value_parser = clap::value_parser!(i32).range(1..=1024))]
    threads: Option<i32>,
    /// How long an idle model stays loaded: 5m, 30s, 1h30m, seconds; 0 unloads after each reply,
    /// a negative value keeps it forever. A request's `keep_alive` overrides it.
    #[arg(long, env = "LLAMA_SERVER_KEEP_ALIVE", default_value = "5m", allow_hyphen_values = true)]
    keep_alive: KeepAlive,
    /// Models loaded at once; loading another evicts the least recently used idle one.
    #[arg(long, env = "LLAMA_SERVER_MAX_LOADED_MODELS", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    max_loaded_models: u16,
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
    /// Origins browsers may call from (CORS), or `*`; none by default.
    #[arg(long = "allow-origin", env = "LLAMA_SERVER_ORIGINS", value_delimiter = ',')]
    origins: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let specs = match model_specs(&cli.models) {
        Ok(specs) => specs,
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
    let code = runtime.block_on(serve(cli, specs));
    // A model still loading on a blocking thread must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

/// `--model` values to names and paths; the default model when there are none.
fn model_specs(args: &[String]) -> Result<Vec<ModelSpec>, String> {
    use llama_examples::models::{by_name, default_model, NAMED};
    let known = |s: &str| NAMED.iter().any(|(n, _)| *n == s);
    let fetch = |name: &str| by_name(name).map_err(|e| e.to_string());
    if args.is_empty() {
        let path = default_model().map_err(|e| e.to_string())?;
        return Ok(vec![ModelSpec { name: "smollm2".into(), path }]);
    }
    let mut specs: Vec<ModelSpec> = Vec::new();
    for arg in args {
        let (name, path) = match arg.split_once('=') {
            Some((name, target)) if Path::new(target).exists() => (name.to_string(), PathBuf::from(target)),
            Some((name, target)) if known(target) => (name.to_string(), fetch(target)?),
            Some((_, target)) => return Err(format!("--model {arg}: no such file {target}")),
            None if Path::new(arg).exists() => {
                let stem = Path::new(arg).file_stem().and_then(|s| s.to_str()).unwrap_or(arg);
                (stem.to_string(), PathBuf::from(arg))
            }
            None if known(arg) => (arg.clone(), fetch(arg)?),
            None => return Err(format!("--model {arg}: neither a file nor a known model name")),
        };
        if name.is_empty() {
            return Err(format!("--model {arg}: the name is empty"));
        }
        if specs.iter().any(|s| s.name == name) {
            return Err(format!("--model {arg}: the name {name} is used twice"));
        }
        specs.push(ModelSpec { name, path });
    }
    Ok(specs)
}

fn cors(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).map_err(|_| format!("--allow-origin {o}: not a valid origin")))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    ))
}

async fn serve(cli: Cli, specs: Vec<ModelSpec>) -> ExitCode {
    let cors = match cors(&cli.origins) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind((cli.host.as_str(), cli.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}:{}: {e}", cli.host, cli.port);
            return ExitCode::FAILURE;
        }
    };
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let config = EngineConfig {
        parallel: usize::from(cli.parallel),
        ctx: cli.ctx as usize,
        threads: cli.threads.map(|t| t as usize),
        max_queue: cli.max_queue as usize,
        cache_ram: cli.cache_ram.saturating_mul(1 << 20),
        stall_timeout: (cli.stall_timeout > 0).then(|| Duration::from_secs(cli.stall_timeout)),
    };
    let registry = Registry::new(specs, config, usize::from(cli.max_loaded_models), cli.keep_alive);
    let state = AppState {
        registry: registry.clone(),
        http: Arc::new(HttpMetrics::default()),
        body_limit: BodyLimit(cli.max_body),
        api_key: cli.api_key.map(Arc::from),
    };
    match listener.local_addr() {
        Ok(addr) => println!("serving {} at http://{addr}/v1", names.join(", ")),
        Err(_) => println!("serving {} at http://{}:{}/v1", names.join(", "), cli.host, cli.port),
    }
    registry.preload();
    tokio::spawn(registry.clone().run_expiry());

    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    // Each SSE chunk is a small write: without NODELAY, Nagle's algorithm holds it until the
    // client acknowledges the previous one, and tokens reach clients late and in clumps.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, routes::router(state, cors))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            eprintln!("shutting down: no new connections; in-flight requests get {}s", cli.grace);
            let _ = stopping_tx.send(());
        })
        .into_future();
    let grace = Duration::from_secs(cli.grace);
    let code = tokio::select! {
        result = server => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        () = async {
            match stopping.await {
                Ok(()) => tokio::time::sleep(grace).await,
                Err(_) => std::future::pending().await,
            }
        } => {
            eprintln!("grace period over: cancelling what is still running");
            ExitCode::SUCCESS
        }
    };
    let engines = registry.unload_all();
    let _ = tokio::task::spawn_blocking(move || drop(engines)).await;
    eprintln!("stopped");
    code
}

async fn shutdown_signal() {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
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
