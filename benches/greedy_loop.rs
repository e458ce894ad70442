//! One greedy run (512-token prompt in one batch, then 128 greedy tokens) through the safe Rust
//! API or through the C reference, in this process, printing one JSON line with the speeds.
//! `benches/compare_c.py` alternates the two implementations and reports ratios and peak RSS.
//!
//! ```text
//! cargo bench --bench greedy_loop -- --impl rust|c [--model PATH | --model-name smollm2|gemma3]
//!     [--threads 2] [--prompt TEXT] [--n-prompt 512] [--n-gen 128]
//! ```

use clap::Parser;
use llama_examples::cli::{at_least, BenchFlag, ModelArgs};
use llama_examples::greedy::{c_greedy, rust_greedy, PROMPTS};

/// One greedy run through the safe Rust API or the C reference; one JSON line with the speeds.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true)]
struct Args {
    /// Which loop runs.
    #[arg(long = "impl", value_name = "IMPL", default_value = "rust", value_parser = ["rust", "c"])]
    imp: String,
    #[command(flatten)]
    model: ModelArgs,
    /// CPU threads.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least(1))]
    threads: usize,
    /// Text the prompt is made of (repeated or cut to --n-prompt tokens).
    #[arg(long, value_name = "TEXT", default_value = PROMPTS[0], allow_hyphen_values = true)]
    prompt: String,
    /// Prompt tokens, decoded in one batch.
    #[arg(long, value_name = "N", default_value_t = 512)]
    n_prompt: usize,
    /// Tokens generated greedily.
    #[arg(long, value_name = "N", default_value_t = 128)]
    n_gen: usize,
    #[command(flatten)]
    bench: BenchFlag,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { imp, model, threads, prompt, n_prompt, n_gen, .. } = Args::parse();
    let model = model.path()?;
    let run = match imp.as_str() {
        "rust" => rust_greedy(&llama::Model::load(&model)?, &prompt, n_prompt, n_gen, threads)?,
        "c" => c_greedy(&model, &prompt, n_prompt, n_gen, threads)?,
        other => return Err(format!("--impl must be rust or c, not {other}").into()),
    };
    let tokens: Vec<String> = run.tokens.iter().map(i32::to_string).collect();
    println!(
        "{{\"impl\":\"{imp}\",\"pp_tps\":{:.3},\"tg_tps\":{:.3},\"tokens\":[{}]}}",
        run.pp_tps,
        run.tg_tps,
        tokens.join(",")
    );
    Ok(())
}
