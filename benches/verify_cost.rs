//! What verifying a draft costs: the time of one target decode of `k` tokens (k = 1..=16) at a
//! fixed context position, relative to a single-token decode. Speculative decoding with `k − 1`
//! drafts only pays when the tokens it gains outweigh this ratio; the adaptive controller
//! measures the same curve online.
//!
//! ```text
//! cargo bench --bench verify_cost -- [--model-name smollm2|gemma3|qwen-coder-1.5b|...]
//!     [--model PATH] [--threads 2] [--rounds 15] [--position 256] [--no-repack]
//!     [--requantize q4_0|q8_0|f16]
//! ```

use std::time::Instant;

use clap::Parser;
use llama::{AddSpecial, Batch, ContextParams, Logits, Model, Output};
use llama_examples::cli::{at_least, BenchFlag, ModelArgs};

/// Time of one target decode of k tokens relative to a single-token decode.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// CPU threads.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least(1))]
    threads: usize,
    /// Timed rounds (after one warm-up round).
    #[arg(long, value_name = "N", default_value_t = 15, value_parser = at_least(1))]
    rounds: usize,
    /// Context position the decodes start at.
    #[arg(long, value_name = "N", default_value_t = 256)]
    position: usize,
    /// Load the model without repacking its weights for the CPU.
    #[arg(long)]
    no_repack: bool,
    /// Run the model re-quantized to this type (q4_0, q8_0 or f16), cached next to it.
    #[arg(long, value_name = "TYPE")]
    requantize: Option<String>,
    #[command(flatten)]
    bench: BenchFlag,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (threads, rounds, position, repack) = (args.threads, args.rounds, args.position, !args.no_repack);
    let path = args.model.path()?;
    let path = match &args.requantize {
        Some(kind) => llama_examples::derived::requantized(&path, kind)?,
        None => path,
    };
    let model = Model::builder(&path).repack(repack).load()?;
    let n_ctx = (position + 64).next_power_of_two().max(1024);
    let mut ctx = model.context(ContextParams::default().n_ctx(n_ctx).n_batch(n_ctx).n_threads(threads))?;
    let line = "fn main() { let xs: Vec<u32> = (0..100).collect(); println!(\"{}\", xs.len()); }\n";
    let mut prompt = model.vocab().tokenize(&line.repeat(position / 8 + 1), AddSpecial::Yes)?;
    prompt.truncate(position.max(1));
    let mut batch = Batch::new(n_ctx, 1);
    batch.add_sequence(&prompt, 0, 0, Logits::Skip)?;
    ctx.decode(&batch)?;
    let pos = prompt.len();
    let sizes: Vec<usize> = (1..=9).chain([12, 16, 17]).collect();
    let mut times = vec![Vec::new(); sizes.len()];
    // Interleave the sizes round by round so drift hits them all alike.
    for _ in 0..rounds + 1 {
        for (i, &k) in sizes.iter().enumerate() {
            batch.clear();
            for j in 0..k {
                batch.add(prompt[j % prompt.len()], pos + j, &[0], Logits::Want)?;
            }
            let t = Instant::now();
            ctx.decode(&batch)?;
            let _: Option<&[f32]> = ctx.logits(Output::At(k - 1)); // synchronises
            times[i].push(t.elapsed().as_secs_f64());
            ctx.kv_seq_rm(0, pos..)?;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.remove(0); // warm-up round
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let meds: Vec<f64> = times.iter_mut().map(median).collect();
    println!("{}: {threads} threads, position {pos}, repack {repack}, median of {rounds}", path.display());
    println!("{:>5} {:>9} {:>10} {:>9}", "batch", "ms", "vs 1 tok", "tok/s");
    for (k, t) in sizes.iter().zip(&meds) {
        println!("{k:>5} {:>9.2} {:>10.2} {:>9.1}", t * 1e3, t / meds[0], *k as f64 / t);
    }
    Ok(())
}
