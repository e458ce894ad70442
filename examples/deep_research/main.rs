//! Deep research on a local model: split a topic into sub-questions, research them in parallel
//! through the serving engine's slots, then write a structured brief in Markdown. Every
//! structured step is constrained by a JSON Schema, so it parses; nothing leaves the machine.
//!
//! ```text
//! cargo run --release --example deep_research -- "Impact of local AI on cloud provider revenue"
//! cargo run --release --example deep_research -- --model qwen-coder-1.5b --out brief.md "..."
//! cargo run --release --example server &   # or Ollama, or any OpenAI-compatible server
//! cargo run --release --example deep_research -- --url http://127.0.0.1:8080/v1 "..."
//! ```
//!
//! Progress goes to stderr, the brief to stdout (or `--out`). Ctrl-C cancels the requests in
//! flight and still writes what was gathered; a second Ctrl-C quits at once.

mod backend;
mod http;
mod markdown;
mod pipeline;
mod progress;
mod structured;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;

use backend::{Backend, Local};
use pipeline::{Report, Settings, Stop};
use progress::Progress;

#[derive(Debug, Parser)]
#[command(
    about = "Research a topic on a local model: sub-questions, researched in parallel, then a brief in Markdown",
    after_help = "With no --model, SmolLM2-135M-Instruct is fetched and used: it runs anywhere, but a 135M \
                  model writes thin, often wrong briefs. For useful ones use --model qwen-coder-1.5b or a \
                  larger GGUF file (or a larger model behind --url)."
)]
struct Cli {
    /// The topic to research.
    topic: String,
    /// A GGUF file or a short name (smollm2, gemma3, qwen-coder-0.5b, qwen-coder-1.5b; fetched on
    /// first use). With --url: the server's model name (default: the first it lists).
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Follow-up rounds: after each round the model names gaps, and they are researched.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Sub-questions researched at once (in-process: the engine's slots).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Most sub-questions in the plan (at least 3).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(3..=16))]
    max_questions: u16,
    /// Most tokens per research answer.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(16..))]
    max_tokens: u16,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.7)]
    temp: f32,
    /// Base seed; each request uses the next one.
    #[arg(long, default_value_t = 42)]
    seed: u32,
    /// Write the Markdown brief to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Run against an OpenAI-compatible server at BASE (e.g. http://127.0.0.1:8080/v1) instead
    /// of loading the model in this process.
    #[arg(long, value_name = "BASE")]
    url: Option<String>,
    /// Bearer token for --url.
    #[arg(long, env = "LLAMA_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Decoding threads, in-process (default: the available cores).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1024))]
    threads: Option<i32>,
    /// KV cache tokens shared by the slots, in-process.
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(512..))]
    ctx: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: cancelling the requests in flight (Ctrl-C again quits at once)");
    });
    if let Err(e) = installed {
        eprintln!("warning: Ctrl-C will quit without writing a report: {e}");
    }
    match run(&cli, &cancel) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(Stop::Interrupted)) => ExitCode::from(130),
        Ok(Some(Stop::Failed(why))) | Err(why) => {
            eprintln!("error: {why}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli, cancel: &AtomicBool) -> Result<Option<Stop>, String> {
    let backend: Box<dyn Backend> = match &cli.url {
        Some(url) => {
            let http =
                http::Http::connect(url, cli.model.as_deref(), cli.api_key.clone()).map_err(|e| e.to_string())?;
            eprintln!("model: {} at {url}", http.model());
            Box::new(http)
        }
        None => Box::new(
            Local::load(
                cli.model.as_deref(),
                usize::from(cli.parallel),
                cli.ctx as usize,
                cli.threads.map(|t| t as usize),
            )
            .map_err(|e| e.to_string())?,
        ),
    };
    let settings = Settings {
        topic: cli.topic.clone(),
        rounds: cli.rounds,
        parallel: usize::from(cli.parallel),
        max_questions: usize::from(cli.max_questions),
        max_tokens: usize::from(cli.max_tokens),
        temperature: cli.temp,
        seed: cli.seed,
    };
    let progress = Progress::new();
    let report = pipeline::run(backend.as_ref(), &settings, cancel, &progress);
    if !report.findings.is_empty() {
        let md = markdown::render(&report);
        match &cli.out {
            Some(path) => {
                std::fs::write(path, md).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            None => print!("{md}"),
        }
    }
    summary(&report);
    Ok(report.stop)
}

/// Timings per step and the aggregate speed, on stderr.
fn summary(report: &Report) {
    eprintln!("\n{:<14} {:>8} {:>7} {:>8}  in flight", "step", "time", "tokens", "t/s");
    let (mut wall, mut tokens) = (0.0, 0);
    for s in &report.steps {
        let secs = s.wall.as_secs_f64();
        wall += secs;
        tokens += s.tokens;
        let tps = s.tokens as f64 / secs.max(1e-9);
        eprintln!("{:<14} {secs:>6.1} s {:>7} {tps:>8.1}  {}", s.name, s.tokens, s.in_flight);
    }
    eprintln!("{:<14} {wall:>6.1} s {tokens:>7} {:>8.1}", "total", tokens as f64 / wall.max(1e-9));
}
