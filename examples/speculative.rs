//! Plain vs speculative greedy decoding on the same prompt: are the texts identical, what was
//! accepted, which draft lengths were chosen, and both speeds.
//!
//! ```text
//! cargo run --release --example speculative -- --ngram "Repeat: a b c d e. Again: a b"
//! cargo run --release --example speculative -- --draft small.gguf --model big.gguf --fixed -n 256 "..."
//! ```
//! Flags: `--model PATH` (target; default SmolLM2), `--draft PATH` (draft model) or `--ngram`
//! (prompt lookup, the default), `--draft-max N` (8), `--adaptive` (default) or `--fixed`,
//! `-n N` (128), `--threads N`.

use std::time::Instant;

use llama::speculative::{DraftModel, Drafter, Mode, NgramDrafter, SpeculativeDecoder};
use llama::{ContextParams, GenerateParams, Model, Sampler};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut model, mut draft, mut max, mut fixed, mut n, mut threads) = (None, None, 8usize, false, 128usize, None);
    let mut prompt = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut v = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--model" | "-m" => model = Some(v()?),
            "--draft" => draft = Some(v()?),
            "--ngram" => draft = None,
            "--draft-max" => max = v()?.parse()?,
            "--fixed" => fixed = true,
            "--adaptive" => fixed = false,
            "-n" => n = v()?.parse()?,
            "--threads" | "-t" => threads = Some(v()?.parse::<i32>()?),
            s if s.starts_with("--") => return Err(format!("unknown flag {s}").into()),
            _ => prompt.push(a),
        }
    }
    let text = if prompt.is_empty() {
        "Rewrite with `total` renamed to `sum`:\nfn add(xs: &[i32]) -> i32 {\n    let mut total = 0;\n    for x in xs {\n        total += x;\n    }\n    total\n}\n\nfn add(xs: &[i32]) -> i32 {\n".to_string()
    } else {
        prompt.join(" ")
    };
    let path = match model {
        Some(p) => p.into(),
        None => llama_examples::models::default_model()?,
    };
    let target = Model::load(&path)?;
    let mut params = ContextParams::default().n_ctx(4096);
    if let Some(t) = threads {
        params = params.n_threads(t);
    }
    let tokens = target.vocab().tokenize(&text, true)?;

    // Plain greedy.
    let mut ctx = target.context(params.clone())?;
    let mut greedy = Sampler::greedy();
    let t = Instant::now();
    let plain: Vec<_> = ctx
        .generate_tokens(&tokens, &mut greedy, &GenerateParams::default().max_tokens(n))?
        .filter_map(|p| p.ok().and_then(|p| p.token))
        .collect();
    let plain_tps = plain.len() as f64 / t.elapsed().as_secs_f64();

    // Speculative.
    let tctx = target.context(params.clone())?;
    let drafter: Box<dyn Drafter> = match &draft {
        Some(d) => Box::new(DraftModel::new(Model::load(d)?.context(params)?, &tctx)?),
        None => Box::new(NgramDrafter::default()),
    };
    let mut spec = SpeculativeDecoder::new(tctx, drafter, max)?;
    if fixed {
        spec = spec.fixed(max);
    }
    let t = Instant::now();
    let out = spec.generate(&tokens, n, Mode::Greedy)?;
    let spec_tps = out.len() as f64 / t.elapsed().as_secs_f64();
    let s = spec.stats();

    println!("{}", target.vocab().detokenize(&out)?);
    eprintln!("\ndrafter: {}", draft.as_deref().unwrap_or("n-gram"));
    let same = out.iter().zip(&plain).take_while(|(a, b)| a == b).count();
    eprintln!("identical to plain greedy: {} (first {same} of {} tokens agree)", out == plain, plain.len());
    eprintln!(
        "acceptance {:.1}% ({} of {} drafted), {:.2} tokens per target decode",
        100.0 * s.acceptance_rate(),
        s.accepted,
        s.drafted,
        s.tokens_per_round()
    );
    let lengths: Vec<String> =
        s.draft_lengths.iter().enumerate().filter(|(_, &c)| c > 0).map(|(k, c)| format!("{k}×{c}")).collect();
    eprintln!("draft lengths chosen (length×rounds): {}", lengths.join(" "));
    eprintln!("plain {plain_tps:.1} t/s, speculative {spec_tps:.1} t/s, ratio {:.2}", spec_tps / plain_tps);
    Ok(())
}
