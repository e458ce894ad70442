//! Tokens/s of the high-level generator (`Context::generate`) against a hand-written loop over
//! the core API (`Batch` + `decode` + `Sampler::sample`), greedy, same prompt and length,
//! alternated over several rounds; prints the per-round ratios and their median.
//!
//! ```text
//! cargo bench --bench generate_vs_core [-- --rounds 10 --tokens 128 --threads 2]
//! ```

use std::time::Instant;

use clap::Parser;
use llama::{AddSpecial, Batch, ContextParams, ControlText, GenerateParams, Logits, Model, Output, Sampler};
use llama_examples::cli::{at_least, BenchFlag};

const PROMPT: &str = "The history of the printing press begins in";

/// Tokens/s of the high-level generator against a hand-written loop over the core API.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true)]
struct Args {
    /// Rounds, each timing both loops.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = at_least(1))]
    rounds: usize,
    /// Tokens generated per loop.
    #[arg(long, value_name = "N", default_value_t = 128)]
    tokens: usize,
    /// CPU threads.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least(1))]
    threads: usize,
    #[command(flatten)]
    bench: BenchFlag,
}

fn core_loop(model: &Model, params: &ContextParams, n: usize) -> f64 {
    let mut ctx = model.context(params.clone()).expect("context");
    let prompt = model.vocab().tokenize(PROMPT, AddSpecial::Yes).expect("tokenize");
    let mut batch = Batch::new(prompt.len(), 1);
    batch.add_sequence(&prompt, 0, 0, Logits::Want).expect("batch");
    ctx.decode(&batch).expect("decode");
    let mut sampler = Sampler::greedy();
    let start = Instant::now();
    let mut generated = 0;
    for pos in prompt.len()..prompt.len() + n {
        let t = sampler.sample(&ctx, Output::Last).expect("sample");
        let _ = model.vocab().token_to_bytes(t, ControlText::Hide).expect("piece");
        generated += 1;
        batch.clear();
        batch.add(t, pos, &[0], Logits::Want).expect("batch");
        ctx.decode(&batch).expect("decode");
    }
    generated as f64 / start.elapsed().as_secs_f64()
}

fn generator(model: &Model, params: &ContextParams, n: usize) -> f64 {
    let mut ctx = model.context(params.clone()).expect("context");
    let mut sampler = Sampler::greedy();
    // Greedy on this prompt runs the full length, so both loops time exactly `n` tokens.
    let gen_params = GenerateParams::default().max_tokens(n);
    let mut gen = ctx.generate(PROMPT, &mut sampler, &gen_params).expect("generate");
    for piece in gen.by_ref() {
        piece.expect("piece");
    }
    let t = gen.timings();
    assert_eq!(t.generated, n, "generation ended early");
    t.generation_tps()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { rounds, tokens, threads, .. } = Args::parse();
    let model = Model::load(llama_examples::models::default_model()?)?;
    let params = ContextParams::default().n_ctx(1024).n_threads(threads);
    core_loop(&model, &params, 16); // warm up
    let mut ratios = Vec::new();
    for r in 0..rounds {
        let (core, generated) = if r % 2 == 0 {
            let c = core_loop(&model, &params, tokens);
            (c, generator(&model, &params, tokens))
        } else {
            let g = generator(&model, &params, tokens);
            (core_loop(&model, &params, tokens), g)
        };
        println!("round {r}: core {core:.1} t/s, generator {generated:.1} t/s, ratio {:.3}", generated / core);
        ratios.push(generated / core);
    }
    ratios.sort_by(f64::total_cmp);
    println!("median generator/core ratio over {rounds} rounds: {:.3}", ratios[rounds / 2]);
    Ok(())
}
