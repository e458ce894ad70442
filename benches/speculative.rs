//! One greedy generation per process — plain, speculative through the safe API, or the C
//! reference of llama.cpp's `speculative-simple` loop — printing one JSON line with the
//! generation speed (prompt excluded), the tokens and the draft statistics.
//! `benches/speculative.py` alternates the runs and prints ratios.
//!
//! ```text
//! cargo bench --bench speculative -- --impl plain|rust|c --model-name qwen-coder-1.5b
//!     [--draft-name qwen-coder-0.5b | --ngram] [--fixed K | --adaptive] [--max 8]
//!     [--prompt-file F | --prompt TEXT] [-n 256] [--threads 2] [--requantize q4_0|q8_0|f16]
//! ```
//!
//! `--requantize` runs the target re-quantized by the crate's own quantize API (cached next to
//! the downloaded models): the same model with another weight type, to show how much of the
//! result belongs to the batched matrix kernels of that type.

use llama::speculative::{CopyDrafter, DraftModel, Drafter, SpeculativeDecoder};
use llama::{AddSpecial, ContextParams, GenerateParams, Model, Sampler, Token};
use llama_examples::{derived, greedy::c_speculative, models};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut imp, mut target, mut draft, mut fixed, mut max) = ("rust".to_string(), None, None, None, 8usize);
    let (mut prompt, mut n, mut threads) = (String::from("def parse_csv(path):\n"), 256usize, 2usize);
    let mut requantize = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--impl" => imp = v()?,
            "--model-name" => target = Some(models::by_name(&v()?)?),
            "--model" => target = Some(v()?.into()),
            "--draft-name" => draft = Some(models::by_name(&v()?)?),
            "--ngram" => draft = None,
            "--fixed" => fixed = Some(v()?.parse()?),
            "--adaptive" => fixed = None,
            "--max" => max = v()?.parse()?,
            "--prompt-file" => prompt = std::fs::read_to_string(v()?)?,
            "--prompt" => prompt = v()?,
            "-n" => n = v()?.parse()?,
            "--threads" => threads = v()?.parse()?,
            "--requantize" => requantize = Some(v()?),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let mut target = match target {
        Some(t) => t,
        None => models::default_model()?,
    };
    if let Some(kind) = &requantize {
        target = derived::requantized(&target, kind)?;
    }
    let model = Model::load(&target)?;
    let params = ContextParams::default().n_ctx(4096).n_threads(threads);
    let tokens = model.vocab().tokenize(&prompt, AddSpecial::Yes)?;
    let gen = GenerateParams::default().max_tokens(n);
    let (out, tps, drafted, accepted, lengths): (Vec<Token>, f64, usize, usize, String) = match imp.as_str() {
        "plain" => {
            let mut ctx = model.context(params)?;
            let mut greedy = Sampler::greedy();
            let mut g = ctx.generate_tokens(&tokens, &mut greedy, &gen)?;
            let mut out = Vec::new();
            for piece in g.by_ref() {
                out.extend(piece?.token);
            }
            (out, g.timings().generation_tps(), 0, 0, String::new())
        }
        "rust" => {
            let ctx = model.context(params.clone())?;
            let drafter: Box<dyn Drafter> = match &draft {
                Some(d) => Box::new(DraftModel::new(Model::load(d)?.context(params)?, &ctx)?),
                None => Box::new(CopyDrafter::default()),
            };
            let mut spec = SpeculativeDecoder::new(ctx, drafter, fixed.unwrap_or(max))?;
            if let Some(k) = fixed {
                spec = spec.fixed(k);
            }
            let out = spec.generate(&tokens, n, &mut Sampler::greedy())?;
            let s = spec.stats();
            let lengths: Vec<String> =
                s.draft_lengths.iter().enumerate().filter(|(_, &c)| c > 0).map(|(k, c)| format!("{k}x{c}")).collect();
            (out, s.tokens_per_second(), s.drafted, s.accepted, lengths.join(" "))
        }
        "c" => {
            let d = draft.as_ref().ok_or("--impl c needs --draft-name or --draft")?;
            let ids: Vec<i32> = tokens.iter().map(|t| t.0).collect();
            let r = c_speculative(&target, d, &ids, n, fixed.unwrap_or(max), threads)?;
            (r.tokens.into_iter().map(Token).collect(), r.tg_tps, r.drafted, r.accepted, String::new())
        }
        other => return Err(format!("--impl must be plain, rust or c, not {other}").into()),
    };
    let ids: Vec<String> = out.iter().map(|t| t.0.to_string()).collect();
    println!(
        "{{\"impl\":\"{imp}\",\"tps\":{tps:.3},\"drafted\":{drafted},\"accepted\":{accepted},\"lengths\":\"{lengths}\",\"tokens\":[{}]}}",
        ids.join(",")
    );
    Ok(())
}
