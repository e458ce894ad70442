//! What the Rust GGUF validation adds to a model load: whole loads (mmap on) with validation on
//! and off, alternated round by round (the order flips every round so drift and cache effects
//! hit both alike); prints the median load time of each, the median per-round ratio, the
//! median difference, and the validation timed on its own.
//!
//! ```text
//! cargo bench --bench gguf_validate -- [--model-name smollm2|gemma3|...] [--model PATH]
//!     [--rounds 7]
//! ```

use std::path::Path;
use std::time::Instant;

use clap::Parser;
use llama::Model;
use llama_examples::cli::{BenchFlag, ModelArgs};

/// Whole model loads with the Rust GGUF validation on and off, alternated.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Rounds, each loading the model with and without validation (0 counts as 1).
    #[arg(long, value_name = "N", default_value_t = 7)]
    rounds: usize,
    #[command(flatten)]
    bench: BenchFlag,
}

fn load_secs(path: &Path, validate: bool) -> Result<f64, llama::LoadError> {
    let start = Instant::now();
    let model = Model::builder(path).validate(validate).load()?;
    let secs = start.elapsed().as_secs_f64();
    drop(model);
    Ok(secs)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (path, rounds) = (args.model.path()?, args.rounds.max(1));
    // Warm-up: the file in the page cache, backends initialised.
    load_secs(&path, true)?;
    load_secs(&path, false)?;

    let (mut on, mut off, mut ratios, mut diffs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = load_secs(&path, true)?;
            (a, load_secs(&path, false)?)
        } else {
            let b = load_secs(&path, false)?;
            (load_secs(&path, true)?, b)
        };
        on.push(a);
        off.push(b);
        ratios.push(a / b);
        diffs.push(a - b);
    }
    let mut alone: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            Model::builder(&path).check_file().map(|()| start.elapsed().as_secs_f64())
        })
        .collect::<Result<_, _>>()?;
    let (on, off) = (median(&mut on), median(&mut off));
    println!("{}: {rounds} rounds of whole loads (mmap), median", path.display());
    println!("  validation on : {:8.2} ms", on * 1e3);
    println!("  validation off: {:8.2} ms", off * 1e3);
    println!(
        "  on/off ratio  : {:8.3} (per-round median; {:+.2} ms per load)",
        median(&mut ratios),
        median(&mut diffs) * 1e3
    );
    println!("  validation alone: {:6.2} ms", median(&mut alone) * 1e3);
    Ok(())
}
