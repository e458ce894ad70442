//! Plain vs speculative greedy decoding on the same prompt: are the texts identical, what was
//! accepted, which draft lengths were chosen, and both speeds (generation only, prompt excluded).
//!
//! ```text
//! cargo run --release --example speculative -- --ngram "Repeat: a b c d e. Again: a b"
//! cargo run --release --example speculative -- --model-name qwen-coder-1.5b \
//!     --draft-name qwen-coder-0.5b --fixed -n 256 --threads 2 "Write a CSV parser in Python."
//! ```
//! Flags: `--model PATH` / `--model-name NAME` (target; default SmolLM2), `--draft PATH` /
//! `--draft-name NAME` (draft model) or `--ngram` (prompt lookup, the default), `--draft-max N`
//! (8), `--adaptive` (default) or `--fixed`, `-n N` (128), `--threads N`, `--chat` (wrap the
//! prompt in the model's chat template), `--prompt-file PATH`, `--no-repack`, `--skip-plain`,
//! `--json` (one summary line on stdout instead of the text), `--untrusted` (load both models in a
//! child process first; see `llama::vet`). Names: smollm2, gemma3,
//! qwen-coder-0.5b, qwen-coder-1.5b (fetched on first use).

use llama::speculative::{CopyDrafter, DraftModel, Drafter, SpeculativeDecoder};
use llama::{AddSpecial, ChatMessage, ContextParams, GenerateParams, Model, Sampler, SpecialSyntax, Token};
use llama_examples::models;

const DEFAULT_PROMPT: &str = "Rewrite with `total` renamed to `sum`:\nfn add(xs: &[i32]) -> i32 {\n    let mut total = 0;\n    for x in xs {\n        total += x;\n    }\n    total\n}\n\nfn add(xs: &[i32]) -> i32 {\n";

#[derive(Default)]
struct Args {
    model: Option<std::path::PathBuf>,
    draft: Option<std::path::PathBuf>,
    max: Option<usize>,
    fixed: bool,
    n: Option<usize>,
    threads: Option<usize>,
    chat: bool,
    no_repack: bool,
    skip_plain: bool,
    json: bool,
    untrusted: bool,
    prompt: Vec<String>,
}

fn parse() -> Result<Args, Box<dyn std::error::Error>> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut v = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" | "-m" => a.model = Some(v()?.into()),
            "--model-name" => a.model = Some(models::by_name(&v()?)?),
            "--draft" => a.draft = Some(v()?.into()),
            "--draft-name" => a.draft = Some(models::by_name(&v()?)?),
            "--ngram" => a.draft = None,
            "--draft-max" => a.max = Some(v()?.parse()?),
            "--fixed" => a.fixed = true,
            "--adaptive" => a.fixed = false,
            "-n" => a.n = Some(v()?.parse()?),
            "--threads" | "-t" => a.threads = Some(v()?.parse()?),
            "--chat" => a.chat = true,
            "--prompt-file" => a.prompt.push(std::fs::read_to_string(v()?)?),
            "--no-repack" => a.no_repack = true,
            "--skip-plain" => a.skip_plain = true,
            "--json" => a.json = true,
            "--untrusted" => a.untrusted = true,
            s if s.starts_with("--") => return Err(format!("unknown flag {s}").into()),
            _ => a.prompt.push(flag),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // When started by `--untrusted` as the vetting child: vet the model and exit here.
    llama::vet::child_main_if_requested();
    let args = parse()?;
    let (max, n) = (args.max.unwrap_or(8), args.n.unwrap_or(128));
    let path = match &args.model {
        Some(p) => p.clone(),
        None => models::default_model()?,
    };
    if args.untrusted {
        llama::vet_model(&path)?;
        if let Some(d) = &args.draft {
            llama::vet_model(d)?;
        }
    }
    let target = Model::builder(&path).repack(!args.no_repack).load()?;
    let mut params = ContextParams::default().n_ctx(4096);
    if let Some(t) = args.threads {
        params = params.n_threads(t);
    }
    let text = if args.prompt.is_empty() { DEFAULT_PROMPT.to_string() } else { args.prompt.join(" ") };
    let tokens = if args.chat {
        let rendered = target.apply_chat_template(&[ChatMessage::new("user", &text)], true)?;
        target.vocab().tokenize_with(&rendered, AddSpecial::Yes, SpecialSyntax::Tokens)?
    } else {
        target.vocab().tokenize(&text, AddSpecial::Yes)?
    };
    let gen_params = GenerateParams::default().max_tokens(n);

    // Plain greedy.
    let (plain, plain_tps) = if args.skip_plain {
        (Vec::new(), f64::NAN)
    } else {
        let mut ctx = target.context(params.clone())?;
        let mut greedy = Sampler::greedy();
        let mut gen = ctx.generate_tokens(&tokens, &mut greedy, &gen_params)?;
        let mut out: Vec<Token> = Vec::new();
        for piece in gen.by_ref() {
            out.extend(piece?.token);
        }
        (out, gen.timings().generation_tps())
    };

    // Speculative.
    let tctx = target.context(params.clone())?;
    let drafter: Box<dyn Drafter> = match &args.draft {
        Some(d) => {
            Box::new(DraftModel::new(Model::builder(d).repack(!args.no_repack).load()?.context(params)?, &tctx)?)
        }
        None => Box::new(CopyDrafter::default()),
    };
    let mut spec = SpeculativeDecoder::new(tctx, drafter, max)?;
    if args.fixed {
        spec = spec.fixed(max);
    }
    let mut out = Vec::new();
    // Greedy, so the output can be compared with the plain run; any chain works the same way.
    let mut sampler = Sampler::greedy();
    for piece in spec.generate_text(&tokens, &mut sampler, &gen_params)? {
        let piece = piece?;
        if !args.json {
            print!("{piece}");
        }
        out.extend(piece.token);
    }
    let s = spec.stats();
    let same = out.iter().zip(&plain).take_while(|(a, b)| a == b).count();
    let identical = !args.skip_plain && out == plain;
    let lengths: Vec<String> =
        s.draft_lengths.iter().enumerate().filter(|(_, &c)| c > 0).map(|(k, c)| format!("{k}x{c}")).collect();
    let drafter = args.draft.as_ref().map_or("n-gram".to_string(), |d| d.display().to_string());
    if args.json {
        println!(
            "{{\"drafter\":\"{drafter}\",\"fixed\":{},\"plain_tps\":{plain_tps:.3},\"spec_tps\":{:.3},\"identical\":{identical},\"agree\":{same},\"tokens\":{},\"acceptance\":{:.4},\"drafted\":{},\"accepted\":{},\"tokens_per_round\":{:.3},\"lengths\":\"{}\"}}",
            args.fixed,
            s.tokens_per_second(),
            out.len(),
            s.acceptance_rate(),
            s.drafted,
            s.accepted,
            s.tokens_per_round(),
            lengths.join(" ")
        );
        return Ok(());
    }
    eprintln!("\n\ndrafter: {drafter}");
    if !args.skip_plain {
        eprintln!("identical to plain greedy: {identical} (first {same} of {} tokens agree)", plain.len());
    }
    eprintln!(
        "acceptance {:.1}% ({} of {} drafted), {:.2} tokens per target decode",
        100.0 * s.acceptance_rate(),
        s.accepted,
        s.drafted,
        s.tokens_per_round()
    );
    eprintln!("draft lengths chosen (length x rounds): {}", lengths.join(" "));
    if s.cost_probes > 0 {
        eprintln!("cost probes (a placeholder token verified to price a batch): {}", s.cost_probes);
    }
    let report = spec.report();
    let costs: Vec<String> = (report.verify_cost.iter().enumerate())
        .filter_map(|(k, t)| t.map(|t| format!("{k}:{:.1}ms", t * 1e3)))
        .collect();
    eprintln!("verify cost by draft length (measured or extrapolated): {}", costs.join(" "));
    eprintln!(
        "time: drafting {:.2} s, verifying {:.2} s, whole generation {:.2} s",
        s.draft_time.as_secs_f64(),
        s.verify_time.as_secs_f64(),
        s.generation_time.as_secs_f64()
    );
    eprintln!(
        "plain {plain_tps:.1} t/s, speculative {:.1} t/s, ratio {:.2}",
        s.tokens_per_second(),
        s.tokens_per_second() / plain_tps
    );
    Ok(())
}
