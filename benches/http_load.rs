//! What HTTP costs: aggregate generated tokens/s of 1, 4 and 8 concurrent streaming clients of
//! the server example (`examples/server`, a separate process, over loopback TCP, SSE parsed
//! and de-chunked by the clients) ÷ the same work on an engine driven directly in this process
//! (same slots, context, threads, prompts, greedy sampling and token counts). Direct and HTTP
//! runs alternate over rounds (machine speed drifts); the medians' ratio is printed.
//!
//! ```text
//! cargo build --release --example server
//! cargo bench --bench http_load -- [--model PATH] [--threads 2] [--rounds 3] [--tokens 96]
//!     [--clients 1,4,8]
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use clap::Parser;
use futures::StreamExt;
use llama::engine::{Engine, EngineParams, Event, Request};
use llama::{GenerateParams, Model, Sampler};
use llama_examples::cli::{at_least, BenchFlag};
use llama_examples::programs::ServerProcess;
use serde_json::{json, Value};

const CLIENTS: [usize; 3] = [1, 4, 8];
const SLOTS: usize = 8;
const CTX: usize = 4096;

/// Streaming HTTP clients of the server example against the same work on an engine in-process.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true)]
struct Args {
    /// GGUF model file (default: SmolLM2-135M-Instruct, fetched on first use).
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// CPU threads, for the server and the in-process engine alike.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least(1))]
    threads: usize,
    /// Rounds per client count, direct and HTTP alternated.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = at_least(1))]
    rounds: usize,
    /// Tokens per client.
    #[arg(long, value_name = "N", default_value_t = 96)]
    tokens: usize,
    /// Concurrent client counts to measure.
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',', default_values_t = CLIENTS, overrides_with = "clients")]
    clients: Vec<usize>,
    #[command(flatten)]
    bench: BenchFlag,
}

/// A prompt every model continues for as long as asked, without an end-of-text: the next numbers.
fn prompt(i: usize) -> String {
    let start = 1 + 100 * i;
    (start..start + 6).map(|n| n.to_string()).collect::<Vec<_>>().join(", ") + ","
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `clients` streams on the engine, each read by an async task as a server's handler would (on
/// one runtime thread): tokens/s over the wall time from the first submission to the last token.
fn direct(rt: &tokio::runtime::Runtime, engine: &Engine, clients: usize, tokens: usize) -> f64 {
    rt.block_on(async {
        let started = Instant::now();
        let readers: Vec<_> = (0..clients)
            .map(|i| {
                let request = Request::new(prompt(i))
                    .sampler(Sampler::chain().greedy_pick())
                    .params(GenerateParams::default().max_tokens(tokens));
                let mut stream = engine.submit(request).expect("the engine accepts the request");
                tokio::spawn(async move {
                    let mut generated = 0;
                    while let Some(event) = stream.next().await {
                        if let Event::Done { usage, .. } = event {
                            generated += usage.completion_tokens;
                        }
                    }
                    generated
                })
            })
            .collect();
        let mut generated = 0;
        for r in readers {
            generated += r.await.unwrap_or(0);
        }
        generated as f64 / started.elapsed().as_secs_f64()
    })
}

/// One streaming completion over a raw socket; returns the completion tokens of its usage chunk.
async fn http_stream(addr: &str, i: usize, tokens: usize) -> usize {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let body = json!({
        "prompt": prompt(i), "max_tokens": tokens, "temperature": 0, "stream": true,
        "stream_options": {"include_usage": true}
    })
    .to_string();
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    sock.set_nodelay(true).ok();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.expect("send");
    let mut r = tokio::io::BufReader::new(sock);
    let mut line = String::new();
    r.read_line(&mut line).await.expect("status line");
    assert!(line.contains(" 200 "), "status {line}");
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line).await.expect("header");
        if line == "\r\n" {
            break;
        }
        chunked |= line.to_ascii_lowercase().starts_with("transfer-encoding: chunked");
    }
    assert!(chunked, "a stream is sent chunked");
    // De-chunk, then split the SSE events.
    let mut sse = String::new();
    let mut usage = 0;
    loop {
        line.clear();
        r.read_line(&mut line).await.expect("chunk size");
        let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
        if size == 0 {
            return usage;
        }
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk).await.expect("chunk");
        sse.push_str(std::str::from_utf8(&chunk[..size]).expect("UTF-8"));
        while let Some(end) = sse.find("\n\n") {
            let event: String = sse.drain(..end + 2).collect();
            let Some(data) = event.strip_prefix("data: ") else { continue };
            if data.trim() == "[DONE]" {
                return usage;
            }
            if data.contains("\"usage\":{") {
                let v: Value = serde_json::from_str(data.trim()).expect("JSON chunk");
                usage = v["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
            }
        }
    }
}

/// `clients` concurrent streams, read like the direct side: one task each on one runtime thread
/// (a load generator that adds a thread per client would compete with the server's decode
/// threads for the same cores and bill the server for it).
fn http(rt: &tokio::runtime::Runtime, addr: &str, clients: usize, tokens: usize) -> f64 {
    rt.block_on(async {
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|i| {
                let addr = addr.to_string();
                tokio::spawn(async move { http_stream(&addr, i, tokens).await })
            })
            .collect();
        let mut generated = 0;
        for w in workers {
            generated += w.await.expect("client");
        }
        generated as f64 / started.elapsed().as_secs_f64()
    })
}

/// A process's CPU ticks in total, and each live thread's name and ticks by thread id.
type CpuSnapshot = (u64, HashMap<String, (String, u64)>);

/// CPU ticks of a process: its total (threads that exited included) and each live thread's
/// name and ticks by thread id. Linux only.
fn cpu_snapshot(pid: u32) -> Option<CpuSnapshot> {
    // After the name: state, then 10 fields, then utime and stime (fields 14 and 15).
    let ticks = |stat: &str| -> Option<(String, u64)> {
        let (name, after) = (stat.split_once('(')?.1.rsplit_once(')')?.0, stat.rsplit_once(')')?.1);
        let fields: Vec<&str> = after.split_whitespace().collect();
        Some((name.to_string(), fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?))
    };
    let (_, total) = ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut threads = HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let task = task.ok()?;
        let thread = ticks(&std::fs::read_to_string(task.path().join("stat")).ok()?)?;
        threads.insert(task.file_name().to_string_lossy().into_owned(), thread);
    }
    Some((total, threads))
}

/// Ticks between two snapshots, split into the engine and the rest (the async runtime: HTTP,
/// JSON, SSE). The rest is summed over the runtime's live threads; everything else is the
/// engine's, including ggml's per-decode worker threads, which exit before they can be counted.
fn cpu_split(before: &CpuSnapshot, after: &CpuSnapshot) -> (u64, u64) {
    let rest: u64 = after
        .1
        .iter()
        .filter(|(_, (name, _))| !name.starts_with("llama-engine"))
        .map(|(tid, (_, t))| t.saturating_sub(before.1.get(tid).map_or(0, |b| b.1)))
        .sum();
    (after.0.saturating_sub(before.0).saturating_sub(rest), rest)
}

fn start_server(
    model: &std::path::Path,
    threads: usize,
) -> Result<(ServerProcess, String), Box<dyn std::error::Error>> {
    let (slots, ctx, threads) = (SLOTS.to_string(), CTX.to_string(), threads.to_string());
    let model = format!("bench={}", model.display());
    let args = ["--parallel", &slots, "--ctx", &ctx, "--threads", &threads, "--keep-alive", "-1", "--model", &model];
    let server = ServerProcess::start(&args, Stdio::null())
        .map_err(|e| format!("{e} (cargo build --release --example server first)"))?;
    let addr = server.url.trim_start_matches("http://").trim_end_matches("/v1").to_string();
    Ok((server, addr))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let path = match a.model {
        Some(p) => p,
        None => llama_examples::models::default_model()?,
    };
    let model = Model::load(&path)?;
    let engine = Engine::new(&model, EngineParams::default().slots(SLOTS).n_ctx(CTX).threads(a.threads))?;
    let (server, addr) = start_server(&path, a.threads)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Warm both up (page cache, first-decode allocations, the server's model load).
    direct(&rt, &engine, 1, 8);
    http(&rt, &addr, 1, 8);

    let cpu_before = cpu_snapshot(server.child.id());
    println!("{} tokens per client, {} rounds, {} threads, {SLOTS} slots", a.tokens, a.rounds, a.threads);
    println!("{:>7}  {:>12}  {:>10}  {:>6}   per round", "clients", "direct t/s", "HTTP t/s", "ratio");
    for &clients in &a.clients {
        let (mut d, mut h) = (Vec::new(), Vec::new());
        for round in 0..a.rounds {
            // Alternate which goes first, so a drift in speed does not favour one side.
            if round % 2 == 0 {
                d.push(direct(&rt, &engine, clients, a.tokens));
                h.push(http(&rt, &addr, clients, a.tokens));
            } else {
                h.push(http(&rt, &addr, clients, a.tokens));
                d.push(direct(&rt, &engine, clients, a.tokens));
            }
        }
        let rounds = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" ");
        let spread = format!("direct [{}], HTTP [{}]", rounds(&d), rounds(&h));
        let (d, h) = (median(d), median(h));
        println!("{clients:>7}  {d:>12.1}  {h:>10.1}  {:>6.3}   {spread}", h / d);
    }
    // Wall-clock ratios move with whatever else the machine runs; the server's own CPU split
    // does not: what its HTTP side costs next to its engine.
    if let (Some(before), Some(after)) = (cpu_before, cpu_snapshot(server.child.id())) {
        let (engine, http) = cpu_split(&before, &after);
        println!(
            "server CPU during the HTTP runs: HTTP side (async runtime) {:.1}% of the engine's ({http} vs {engine} ticks)",
            100.0 * http as f64 / engine.max(1) as f64
        );
    }
    Ok(())
}
