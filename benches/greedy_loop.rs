//! One greedy run (512-token prompt in one batch, then 128 greedy tokens) through the safe Rust
//! API or through the C reference, in this process, printing one JSON line with the speeds.
//! `benches/compare_c.py` alternates the two implementations and reports ratios and peak RSS.
//!
//! ```text
//! cargo bench --bench greedy_loop -- --impl rust|c [--model PATH | --model-name smollm2|gemma3]
//!     [--threads 2] [--prompt TEXT] [--n-prompt 512] [--n-gen 128]
//! ```

use llama_examples::greedy::{c_greedy, rust_greedy, PROMPTS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut imp, mut model, mut threads, mut prompt) = ("rust".to_string(), None, 2, PROMPTS[0].to_string());
    let (mut n_prompt, mut n_gen) = (512usize, 128usize);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--impl" => imp = v()?,
            "--model" => model = Some(std::path::PathBuf::from(v()?)),
            "--model-name" => model = Some(llama_examples::models::by_name(&v()?)?),
            "--threads" => threads = v()?.parse()?,
            "--prompt" => prompt = v()?,
            "--n-prompt" => n_prompt = v()?.parse()?,
            "--n-gen" => n_gen = v()?.parse()?,
            "--bench" => {} // passed by `cargo bench`
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let model = match model {
        Some(m) => m,
        None => llama_examples::models::default_model()?,
    };
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
