//! Many prompts at once through the serving engine: each streams to its own labelled lines,
//! then per-request and aggregate speeds.
//!
//! ```text
//! cargo run --release --example parallel
//! cargo run --release --example parallel -- --slots 8 -n 64 "First prompt" "Second prompt" ...
//! ```
//!
//! With no prompts, four built-in ones run. With no `--model`, the default model
//! (SmolLM2-135M-Instruct) is fetched on first use.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Instant;

use llama::engine::{Engine, EngineParams, Event, Request};
use llama::{ChatMessage, GenerateParams, Model, Sampler};

const USAGE: &str = "usage: parallel [--model PATH | --model-name NAME] [--slots N] [-n N] [--threads N] \
[--ctx N] [--temp T] [--raw] [PROMPT ...]";

const BUILT_IN: [&str; 4] = [
    "Explain why the sky is blue in two sentences.",
    "Write a short poem about a lighthouse.",
    "Give three tips for learning a new language.",
    "Describe how a bicycle works.",
];

struct Args {
    model: Option<std::path::PathBuf>,
    slots: usize,
    n_predict: usize,
    threads: Option<usize>,
    n_ctx: usize,
    temp: f32,
    raw: bool,
    prompts: Vec<String>,
}

fn parse_args() -> Result<Args, Box<dyn std::error::Error>> {
    let mut a = Args {
        model: None,
        slots: 4,
        n_predict: 96,
        threads: None,
        n_ctx: 4096,
        temp: 0.0,
        raw: false,
        prompts: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut v = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--model" | "-m" => a.model = Some(v()?.into()),
            "--model-name" => a.model = Some(llama_examples::models::by_name(&v()?)?),
            "--slots" => a.slots = v()?.parse()?,
            "-n" => a.n_predict = v()?.parse()?,
            "--threads" => a.threads = Some(v()?.parse()?),
            "--ctx" => a.n_ctx = v()?.parse()?,
            "--temp" => a.temp = v()?.parse()?,
            "--raw" => a.raw = true,
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with('-') => return Err(format!("unknown argument {s}\n{USAGE}").into()),
            _ => a.prompts.push(arg),
        }
    }
    if a.prompts.is_empty() {
        a.prompts = BUILT_IN.iter().map(|s| s.to_string()).collect();
    }
    Ok(a)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let path = match &args.model {
        Some(p) => p.clone(),
        None => llama_examples::models::default_model()?,
    };
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
