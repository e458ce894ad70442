//! Quick generation: stream a continuation of a prompt.
//!
//! ```text
//! cargo run --release --example generate -- "Your prompt"
//! cargo run --release --example generate -- --chat -n 64 --temp 0.7 "Tell me a joke"
//! ```
//!
//! `--help` lists the flags. With no `--model`, the default model (SmolLM2-135M-Instruct) is
//! fetched on first use. `--rpc HOST:PORT[,HOST:PORT]` places the layers on RPC servers
//! (`examples/rpc_server.rs`; needs the `rpc` feature). `--untrusted` loads the model in a child
//! process first, so a file that crashes llama.cpp's loader kills the child, not this program
//! (see `llama::vet`). Text goes to stdout as it is generated; timings go to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use llama::Logits;
use llama::{
    AddSpecial, Batch, ChatMessage, ContextParams, ControlText, Model, Output, Sampler, SpecialSyntax, Utf8Decoder,
};
use llama_examples::cli::at_least;

/// Stream a continuation of a prompt.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true)]
struct Args {
    /// GGUF model file (default: SmolLM2-135M-Instruct, fetched on first use).
    #[arg(long, short = 'm', value_name = "PATH")]
    model: Option<PathBuf>,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", value_name = "N", default_value_t = 128)]
    n_predict: usize,
    /// Sampling temperature; 0 or below samples greedily.
    #[arg(long, value_name = "T", default_value_t = 0.0, allow_negative_numbers = true)]
    temp: f32,
    /// Top-k cutoff (with --temp above 0).
    #[arg(long, value_name = "K", default_value_t = 40, allow_negative_numbers = true)]
    top_k: i32,
    /// Top-p cutoff (with --temp above 0).
    #[arg(long, value_name = "P", default_value_t = 0.95, allow_negative_numbers = true)]
    top_p: f32,
    /// Sampling seed.
    #[arg(long, value_name = "S", default_value_t = 42)]
    seed: u32,
    /// CPU threads (default: llama.cpp's choice).
    #[arg(long, short = 't', value_name = "N", value_parser = at_least(1))]
    threads: Option<usize>,
    /// Context size in tokens.
    #[arg(long = "ctx", short = 'c', value_name = "N", default_value_t = 2048)]
    n_ctx: usize,
    /// Wrap the prompt in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Load the model in a child process first, so a file that crashes llama.cpp's loader kills
    /// the child, not this program.
    #[arg(long)]
    untrusted: bool,
    /// Layers on the GPU: 0 runs on the CPU; negative or more than the model has, all
    /// (default: llama.cpp's, all layers wherever a GPU backend sees a device).
    #[arg(long = "gpu-layers", visible_alias = "ngl", value_name = "N", allow_negative_numbers = true)]
    gpu_layers: Option<i32>,
    /// Place the layers on these RPC servers (needs the `rpc` feature).
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT]", value_delimiter = ',', overrides_with = "rpc")]
    rpc: Vec<String>,
    /// The prompt; several words are joined with spaces.
    #[arg(value_name = "PROMPT", default_value = "Once upon a time")]
    words: Vec<String>,
}

fn main() -> ExitCode {
    // When started by `--untrusted` as the vetting child: vet the model and exit here.
    llama::vet::child_main_if_requested();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let prompt_text = args.words.join(" ");
    let path = match &args.model {
        Some(p) => p.clone(),
        None => llama_examples::models::default_model()?,
    };

    if args.untrusted {
        llama::vet_model(&path)?;
    }
    let t0 = Instant::now();
    let rpc: Vec<&str> = args.rpc.iter().map(|s| s.trim()).collect();
    let mut builder = Model::builder(&path).rpc_servers(&rpc);
    if let Some(n) = args.gpu_layers {
        builder = builder.gpu_layers(n);
    }
    let model = builder.load()?;
    let load_s = t0.elapsed().as_secs_f64();

    let mut params = ContextParams::default().n_ctx(args.n_ctx);
    if let Some(t) = args.threads {
        params = params.n_threads(t);
    }
    let mut ctx = model.context(params)?;
    let vocab = model.vocab();

    let prompt = if args.chat {
        let text = model.apply_chat_template(&[ChatMessage::new("user", &prompt_text)], true)?;
        // The rendered template is trusted text whose control tokens must be parsed.
        vocab.tokenize_with(&text, AddSpecial::Yes, SpecialSyntax::Tokens)?
    } else {
        vocab.tokenize(&prompt_text, AddSpecial::Yes)?
    };
    let needed = prompt.len() + args.n_predict;
    if needed > ctx.n_ctx() as usize {
        return Err(format!(
            "prompt ({} tokens) plus -n {} does not fit in the context of {} tokens; raise --ctx",
            prompt.len(),
            args.n_predict,
            ctx.n_ctx()
        )
        .into());
    }

    let mut sampler = if args.temp <= 0.0 {
        Sampler::greedy()
    } else {
        Sampler::chain().top_k(args.top_k).top_p(args.top_p).temp(args.temp).dist(args.seed)
    };

    // The prompt in chunks of at most n_batch tokens, logits for the last one only.
    let t1 = Instant::now();
    ctx.decode_tokens(&prompt, 0, 0)?;
    let prompt_s = t1.elapsed().as_secs_f64();
    let mut batch = Batch::new(1, 1);

    let mut out = std::io::stdout().lock();
    if !args.chat {
        write!(out, "{prompt_text}")?;
    }
    let mut text = Utf8Decoder::default();
    let mut pos = prompt.len();
    let mut generated = 0usize;
    let t2 = Instant::now();
    while generated < args.n_predict {
        let token = sampler.sample(&ctx, Output::Last)?;
        if vocab.is_eog(token) {
            break;
        }
        generated += 1;
        write!(out, "{}", text.push(&vocab.token_to_bytes(token, ControlText::Hide)?))?;
        out.flush()?;
        if generated == args.n_predict {
            break;
        }
        batch.clear();
        batch.add(token, pos, &[0], Logits::Want)?;
        ctx.decode(&batch)?;
        pos += 1;
    }
    writeln!(out, "{}", text.finish())?;
    let gen_s = t2.elapsed().as_secs_f64();

    eprintln!(
        "\nmodel: {} | load {:.2} s | prompt {} tokens, {:.1} t/s | generated {} tokens, {:.1} t/s",
        model.description(),
        load_s,
        prompt.len(),
        prompt.len() as f64 / prompt_s.max(1e-9),
        generated,
        generated as f64 / gen_s.max(1e-9),
    );
    Ok(())
}
