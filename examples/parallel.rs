//! Many prompts at once through the serving engine: each streams to its own labelled lines,
//! then per-request and aggregate speeds.
//!
//! ```text
//! cargo run --release --example parallel
//! cargo run --release --example parallel -- --slots 8 -n 64 "First prompt" "Second prompt" ...
//! ```
//!
//! With no prompts, four built-in ones run. With no `--model`, the default model
//! (SmolLM2-135M-Instruct) is fetched on first use. `--help` lists the flags.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Instant;

use clap::Parser;
use llama::engine::{Engine, EngineParams, Event, Request};
use llama::{ChatMessage, GenerateParams, Model, Sampler};
use llama_examples::cli::{at_least, ModelArgs};

const BUILT_IN: [&str; 4] = [
    "Explain why the sky is blue in two sentences.",
    "Write a short poem about a lighthouse.",
    "Give three tips for learning a new language.",
    "Describe how a bicycle works.",
];

/// Many prompts at once through the serving engine, then per-request and aggregate speeds.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true, mut_arg("model", |a| a.short('m')))]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Requests decoded together.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = at_least(1))]
    slots: usize,
    /// Tokens per request at most.
    #[arg(short = 'n', value_name = "N", default_value_t = 96)]
    n_predict: usize,
    /// CPU threads (default: the available cores).
    #[arg(long, value_name = "N", value_parser = at_least(1))]
    threads: Option<usize>,
    /// KV cache size in tokens, shared by the slots.
    #[arg(long = "ctx", value_name = "N", default_value_t = 4096)]
    n_ctx: usize,
    /// Sampling temperature; 0 or below samples greedily.
    #[arg(long, value_name = "T", default_value_t = 0.0, allow_negative_numbers = true)]
    temp: f32,
    /// Send the prompts as plain text instead of chat messages.
    #[arg(long)]
    raw: bool,
    /// Prompts, one request each (default: four built-in ones).
    #[arg(value_name = "PROMPT")]
    prompts: Vec<String>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.prompts.is_empty() {
        args.prompts = BUILT_IN.iter().map(|s| s.to_string()).collect();
    }
    let path = args.model.path()?;
    let model = Model::load(&path)?;
    let mut params = EngineParams::default().slots(args.slots).n_ctx(args.n_ctx);
    if let Some(t) = args.threads {
        params = params.threads(t);
    }
    let engine = Engine::new(&model, params)?;

    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    for (i, prompt) in args.prompts.iter().enumerate() {
        let sampler = if args.temp > 0.0 {
            Sampler::chain().top_k(40).top_p(0.95).temp(args.temp).dist(42 + i as u32)
        } else {
            Sampler::greedy()
        };
        let request = if args.raw {
            Request::new(prompt.as_str())
        } else {
            Request::new(vec![ChatMessage::user(prompt.as_str())])
        };
        let stream =
            engine.submit(request.sampler(sampler).params(GenerateParams::default().max_tokens(args.n_predict)))?;
        let tx = tx.clone();
        // One reader per request: the engine never waits for any of them.
        std::thread::spawn(move || {
            for event in stream {
                if tx.send((i, event)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);

    let mut lines: BTreeMap<usize, String> = BTreeMap::new();
    let mut report = Vec::new();
    for (i, event) in rx {
        match event {
            Event::Piece { piece, .. } => {
                let line = lines.entry(i).or_default();
                line.push_str(&piece.text);
                while let Some(nl) = line.find('\n') {
                    println!("[{i}] {}", &line[..nl]);
                    line.drain(..=nl);
                }
            }
            Event::Done { finish, usage, timings, .. } => {
                if let Some(rest) = lines.remove(&i).filter(|l| !l.is_empty()) {
                    println!("[{i}] {rest}");
                }
                let gen_time = timings.total.saturating_sub(timings.time_to_first_token).as_secs_f64();
                report.push((i, finish, usage, timings, usage.completion_tokens as f64 / gen_time.max(1e-9)));
            }
            Event::Error { message, .. } => eprintln!("[{i}] error: {message}"),
            _ => {}
        }
    }
    let wall = start.elapsed().as_secs_f64();
    report.sort_by_key(|r| r.0);
    eprintln!();
    let mut total = 0;
    for (i, finish, usage, timings, tps) in &report {
        total += usage.completion_tokens;
        eprintln!(
            "[{i}] {:?}: {} prompt tokens ({} cached), {} generated, first token after {:.0} ms, {:.1} t/s",
            finish,
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.completion_tokens,
            timings.time_to_first_token.as_secs_f64() * 1e3,
            tps
        );
    }
    let m = engine.metrics();
    eprintln!(
        "aggregate: {total} tokens from {} requests in {wall:.2} s = {:.1} t/s ({} decode steps, up to {} sequences at once)",
        report.len(),
        total as f64 / wall,
        m.decode_steps,
        m.max_slots_busy
    );
    Ok(())
}
