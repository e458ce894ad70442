//! Plain vs speculative greedy decoding on the same prompt: are the texts identical, what was
//! accepted, which draft lengths were chosen, and both speeds (generation only, prompt excluded).
//!
//! ```text
//! cargo run --release --example speculative -- --ngram "Repeat: a b c d e. Again: a b"
//! cargo run --release --example speculative -- --model-name qwen-coder-1.5b \
//!     --draft-name qwen-coder-0.5b --fixed -n 256 --threads 2 "Write a CSV parser in Python."
//! ```
//!
//! Flags (`--help` lists them all): `--model PATH` / `--model-name NAME` (target; default
//! SmolLM2), `--draft PATH` / `--draft-name NAME` (draft model) or `--ngram` (prompt lookup, the
//! default), `--draft-max N` (8), `--adaptive` (default) or `--fixed`, `-n N` (128),
//! `--threads N`, `--chat` (wrap the prompt in the model's chat template), `--prompt-file PATH`
//! (repeatable), `--no-repack`, `--skip-plain`, `--json` (one summary line on stdout instead of
//! the text), `--untrusted` (load both models in a child process first; see `llama::vet`).
//! Names: smollm2, gemma3, qwen-coder-0.5b, qwen-coder-1.5b (fetched on first use).

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::Parser;
use llama::speculative::{CopyDrafter, DraftModel, Drafter, SpeculativeDecoder};
use llama::{AddSpecial, ChatMessage, ContextParams, GenerateParams, Model, Sampler, SpecialSyntax, Token};
use llama_examples::cli::{at_least, ModelArgs};
use llama_examples::models;

const DEFAULT_PROMPT: &str = "Rewrite with `total` renamed to `sum`:\nfn add(xs: &[i32]) -> i32 {\n    let mut total = 0;\n    for x in xs {\n        total += x;\n    }\n    total\n}\n\nfn add(xs: &[i32]) -> i32 {\n";

/// Plain vs speculative greedy decoding on the same prompt.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true, mut_arg("model", |a| a.short('m')))]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Draft model file.
    #[arg(long, value_name = "PATH")]
    draft: Option<PathBuf>,
    /// A known draft model by name, fetched on first use.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "draft",
        value_parser = PossibleValuesParser::new(models::NAMED.map(|(name, _)| name))
    )]
    draft_name: Option<String>,
    /// Draft by prompt lookup instead of a model (the default).
    #[arg(long, conflicts_with_all = ["draft", "draft_name"])]
    ngram: bool,
    /// Longest draft.
    #[arg(long, value_name = "N", default_value_t = 8)]
    draft_max: usize,
    /// Always draft --draft-max tokens.
    #[arg(long, overrides_with = "adaptive")]
    fixed: bool,
    /// Choose each draft's length from measured costs (the default).
    #[arg(long, overrides_with = "fixed")]
    adaptive: bool,
    /// Tokens to generate.
    #[arg(short = 'n', value_name = "N", default_value_t = 128)]
    n: usize,
    /// CPU threads (default: llama.cpp's choice).
    #[arg(long, short = 't', value_name = "N", value_parser = at_least(1))]
    threads: Option<usize>,
    /// Wrap the prompt in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Read prompt text from this file (repeatable; files come before PROMPT words).
    #[arg(long, value_name = "PATH")]
    prompt_file: Vec<PathBuf>,
    /// Load the models without repacking their weights for the CPU.
    #[arg(long)]
    no_repack: bool,
    /// Skip the plain run (no comparison, no plain speed).
    #[arg(long)]
    skip_plain: bool,
    /// Print one JSON summary line on stdout instead of the text.
    #[arg(long)]
    json: bool,
    /// Load both models in a child process first, so a file that crashes llama.cpp's loader
    /// kills the child, not this program.
    #[arg(long)]
    untrusted: bool,
    /// The prompt; several words are joined with spaces (default: a renaming task).
    #[arg(value_name = "PROMPT")]
    prompt: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // When started by `--untrusted` as the vetting child: vet the model and exit here.
    llama::vet::child_main_if_requested();
    let args = Args::parse();
    let (max, n, fixed) = (args.draft_max, args.n, args.fixed && !args.adaptive);
    let path = args.model.path()?;
    let draft = match (&args.draft, &args.draft_name) {
        _ if args.ngram => None,
        (Some(d), _) => Some(d.clone()),
        (None, Some(name)) => Some(models::by_name(name)?),
        (None, None) => None,
    };
    let mut pieces = Vec::new();
    for file in &args.prompt_file {
        pieces.push(std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?);
    }
    pieces.extend(args.prompt.iter().cloned());
    if args.untrusted {
        llama::vet_model(&path)?;
        if let Some(d) = &draft {
            llama::vet_model(d)?;
        }
    }
    let target = Model::builder(&path).repack(!args.no_repack).load()?;
    let mut params = ContextParams::default().n_ctx(4096);
    if let Some(t) = args.threads {
        params = params.n_threads(t);
    }
    let text = if pieces.is_empty() { DEFAULT_PROMPT.to_string() } else { pieces.join(" ") };
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
    let drafter: Box<dyn Drafter> = match &draft {
        Some(d) => {
            Box::new(DraftModel::new(Model::builder(d).repack(!args.no_repack).load()?.context(params)?, &tctx)?)
        }
        None => Box::new(CopyDrafter::default()),
    };
    let mut spec = SpeculativeDecoder::new(tctx, drafter, max)?;
    if fixed {
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
    let drafter = draft.as_ref().map_or("n-gram".to_string(), |d| d.display().to_string());
    if args.json {
        println!(
            "{{\"drafter\":\"{drafter}\",\"fixed\":{},\"plain_tps\":{plain_tps:.3},\"spec_tps\":{:.3},\"identical\":{identical},\"agree\":{same},\"tokens\":{},\"acceptance\":{:.4},\"drafted\":{},\"accepted\":{},\"tokens_per_round\":{:.3},\"lengths\":\"{}\"}}",
            fixed,
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
    eprintln!("controller phase at the end: {:?}", report.phase);
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
