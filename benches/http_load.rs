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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use futures::StreamExt;
use llama::engine::{Engine, EngineParams, Event, Request};
use llama::{GenerateParams, Model, Sampler};
use llama_examples::programs::ServerProcess;
use serde_json::{json, Value};

const CLIENTS: [usize; 3] = [1, 4, 8];
const SLOTS: usize = 8;
const CTX: u32 = 4096;

struct Args {
    model: Option<PathBuf>,
    threads: i32,
    rounds: usize,
    tokens: usize,
    clients: Vec<usize>,
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
fn http_stream(addr: &str, i: usize, tokens: usize) -> usize {
    let body = json!({
        "prompt": prompt(i), "max_tokens": tokens, "temperature": 0, "stream": true,
        "stream_options": {"include_usage": true}
    })
    .to_string();
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_nodelay(true).ok();
    write!(
        sock,
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut r = BufReader::new(sock);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    assert!(line.contains(" 200 "), "status {line}");
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
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
        r.read_line(&mut line).expect("chunk size");
        let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
        if size == 0 {
            return usage;
        }
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk).expect("chunk");
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

fn http(addr: &str, clients: usize, tokens: usize) -> f64 {
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let addr = addr.to_string();
            std::thread::spawn(move || http_stream(&addr, i, tokens))
        })
        .collect();
    let generated: usize = workers.into_iter().map(|w| w.join().expect("client")).sum();
    generated as f64 / started.elapsed().as_secs_f64()
}

/// CPU ticks of a process's threads, split into its engine threads (named `llama-engine`; ggml's
/// workers inherit the name) and the rest (the async runtime: HTTP, JSON, SSE). Linux only.
fn cpu_split(pid: u32) -> Option<(u64, u64)> {
    let (mut engine, mut rest) = (0, 0);
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
        let (name, after) = (stat.split_once('(')?.1.rsplit_once(')')?.0, stat.rsplit_once(')')?.1);
        // After the name: state, then 10 fields, then utime and stime (fields 14 and 15).
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        if name.starts_with("llama-engine") {
            engine += ticks;
        } else {
            rest += ticks;
        }
    }
    Some((engine, rest))
}

fn start_server(model: &std::path::Path, threads: i32) -> Result<(ServerProcess, String), Box<dyn std::error::Error>> {
    let (slots, ctx, threads) = (SLOTS.to_string(), CTX.to_string(), threads.to_string());
    let model = format!("bench={}", model.display());
    let args = ["--parallel", &slots, "--ctx", &ctx, "--threads", &threads, "--keep-alive", "-1", "--model", &model];
    let server = ServerProcess::start(&args, Stdio::null())
        .map_err(|e| format!("{e} (cargo build --release --example server first)"))?;
    let addr = server.url.trim_start_matches("http://").trim_end_matches("/v1").to_string();
    Ok((server, addr))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut a = Args { model: None, threads: 2, rounds: 3, tokens: 96, clients: CLIENTS.to_vec() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut v = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--model" => a.model = Some(v()?.into()),
            "--threads" => a.threads = v()?.parse()?,
            "--rounds" => a.rounds = v()?.parse()?,
            "--tokens" => a.tokens = v()?.parse()?,
            "--clients" => a.clients = v()?.split(',').map(str::parse).collect::<Result<_, _>>()?,
            // `cargo bench` passes --bench.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
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
    http(&addr, 1, 8);

    let cpu_before = cpu_split(server.child.id());
    println!("{} tokens per client, {} rounds, {} threads, {SLOTS} slots", a.tokens, a.rounds, a.threads);
    println!("{:>7}  {:>12}  {:>10}  {:>6}   per round", "clients", "direct t/s", "HTTP t/s", "ratio");
    for &clients in &a.clients {
        let (mut d, mut h) = (Vec::new(), Vec::new());
        for round in 0..a.rounds {
            // Alternate which goes first, so a drift in speed does not favour one side.
            if round % 2 == 0 {
                d.push(direct(&rt, &engine, clients, a.tokens));
                h.push(http(&addr, clients, a.tokens));
            } else {
                h.push(http(&addr, clients, a.tokens));
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
    if let (Some((e0, r0)), Some((e1, r1))) = (cpu_before, cpu_split(server.child.id())) {
        let (engine, http) = (e1 - e0, r1 - r0);
        println!(
            "server CPU during the HTTP runs: HTTP side (async runtime) {:.1}% of the engine threads' ({http} vs {engine} ticks)",
            100.0 * http as f64 / engine.max(1) as f64
        );
    }
    Ok(())
}
