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

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::Parser;
use llama::speculative::{CopyDrafter, DraftModel, Drafter, SpeculativeDecoder};
use llama::{AddSpecial, ContextParams, GenerateParams, Model, Sampler, Token};
use llama_examples::cli::{at_least, BenchFlag, ModelArgs};
use llama_examples::{derived, greedy::c_speculative, models};

/// One greedy generation (plain, speculative, or the C reference); one JSON line with the speed.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true)]
struct Args {
    /// Which generation runs.
    #[arg(long = "impl", value_name = "IMPL", default_value = "rust", value_parser = ["plain", "rust", "c"])]
    imp: String,
    #[command(flatten)]
    model: ModelArgs,
    /// A known draft model by name, fetched on first use.
    #[arg(long, value_name = "NAME", value_parser = PossibleValuesParser::new(models::NAMED.map(|(name, _)| name)))]
    draft_name: Option<String>,
    /// Draft by prompt lookup instead of a model (the default).
    #[arg(long, conflicts_with = "draft_name")]
    ngram: bool,
    /// Always draft K tokens.
    #[arg(long, value_name = "K", overrides_with = "adaptive")]
    fixed: Option<usize>,
    /// Choose each draft's length from measured costs, up to --max (the default).
    #[arg(long, overrides_with = "fixed")]
    adaptive: bool,
    /// Longest draft when adaptive.
    #[arg(long, value_name = "N", default_value_t = 8)]
    max: usize,
    /// Read the prompt from this file.
    #[arg(long, value_name = "PATH", overrides_with = "prompt")]
    prompt_file: Option<PathBuf>,
    /// The prompt (default: the header of a Python function).
    #[arg(
        long,
        value_name = "TEXT",
        overrides_with = "prompt_file",
        allow_hyphen_values = true,
        default_value = "def parse_csv(path):\n",
        hide_default_value = true
    )]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', value_name = "N", default_value_t = 256)]
    n: usize,
    /// CPU threads.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least(1))]
    threads: usize,
    /// Run the target re-quantized to this type (q4_0, q8_0 or f16), cached next to it.
    #[arg(long, value_name = "TYPE")]
    requantize: Option<String>,
    #[command(flatten)]
    bench: BenchFlag,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (imp, max, n, threads) = (args.imp.as_str(), args.max, args.n, args.threads);
    let fixed = if args.adaptive { None } else { args.fixed };
    let draft = match &args.draft_name {
        Some(name) if !args.ngram => Some(models::by_name(name)?),
        _ => None,
    };
    let prompt = match &args.prompt_file {
        Some(file) => std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?,
        None => args.prompt.clone(),
    };
    let mut target = args.model.path()?;
    if let Some(kind) = &args.requantize {
        target = derived::requantized(&target, kind)?;
    }
    let model = Model::load(&target)?;
    let params = ContextParams::default().n_ctx(4096).n_threads(threads);
    let tokens = model.vocab().tokenize(&prompt, AddSpecial::Yes)?;
    let gen = GenerateParams::default().max_tokens(n);
    let (out, tps, drafted, accepted, lengths): (Vec<Token>, f64, usize, usize, String) = match imp {
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
