//! Interactive chat with the model's chat template, streaming replies.
//!
//! ```text
//! cargo run --release --example chat [-- --model PATH --system "You are terse." --temp 0.7]
//! ```
//!
//! Type a message and press Enter. `/reset` starts over; Ctrl-D quits. When the conversation no
//! longer fits in the context, the oldest turns are dropped (the system message stays). Each
//! turn re-renders the whole conversation; the part already in the KV cache is not decoded again
//! (stderr shows how many prompt tokens were decoded).
//!
//! `--help` lists the flags; `--untrusted` loads the model in a child process first (see
//! `llama::vet`).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use llama::{
    ChatMessage, ChatTemplate, ContextParams, FinishReason, GenerateError, GenerateParams, Model, Sampler, Token,
};

/// Interactive chat with the model's chat template, streaming replies.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true)]
struct Args {
    /// GGUF model file with a chat template (default: SmolLM2-135M-Instruct, fetched on first
    /// use).
    #[arg(long, short = 'm', value_name = "PATH")]
    model: Option<PathBuf>,
    /// System message, kept when old turns are dropped.
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    system: Option<String>,
    /// Sampling temperature; 0 or below samples greedily.
    #[arg(long, value_name = "T", default_value_t = 0.0, allow_negative_numbers = true)]
    temp: f32,
    /// Context size in tokens.
    #[arg(long = "ctx", short = 'c', value_name = "N", default_value_t = 2048)]
    n_ctx: usize,
    /// Tokens per reply at most.
    #[arg(short = 'n', value_name = "N", default_value_t = 256)]
    max_tokens: usize,
    /// Sampling seed.
    #[arg(long, value_name = "S", default_value_t = 42)]
    seed: u32,
    /// Load the model in a child process first, so a file that crashes llama.cpp's loader kills
    /// the child, not this program.
    #[arg(long)]
    untrusted: bool,
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
    let path = match &args.model {
        Some(p) => p.clone(),
        None => llama_examples::models::default_model()?,
    };
    if args.untrusted {
        llama::vet_model(&path)?;
    }
    let model = Model::load(&path)?;
    let template = ChatTemplate::from_model(&model)
        .map_err(|e| format!("{e}: this example needs a model with a chat template"))?;
    let mut ctx = model.context(ContextParams::default().n_ctx(args.n_ctx))?;
    let mut sampler = if args.temp <= 0.0 {
        Sampler::greedy()
    } else {
        Sampler::chain().top_k(40).top_p(0.95).min_p(0.05).temp(args.temp).dist(args.seed)
    };
    let params = GenerateParams::default().max_tokens(args.max_tokens);
    let fresh = || args.system.iter().map(ChatMessage::system).collect::<Vec<_>>();
    let mut history = fresh();

    eprintln!("chatting with {} — /reset starts over, Ctrl-D quits", model.description());
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if line.trim() == "/reset" {
            history = fresh();
            ctx.clear_kv();
            eprintln!("(conversation cleared)");
            continue;
        }
        history.push(ChatMessage::user(line));
        let reply = loop {
            let tokens = template.render_tokens(&model.vocab(), &history, true)?;
            match stream_reply(&mut ctx, &tokens, &mut sampler, &params, &mut stdout) {
                Ok(Some(reply)) => break reply,
                // Out of room: drop the oldest exchange (keep the system message) and retry.
                Ok(None) | Err(GenerateError::PromptTooLong { .. }) if drop_oldest(&mut history) => {
                    eprintln!("\n(context full: dropped the oldest turn)");
                }
                Ok(None) => return Err("the message alone does not fit in the context; raise --ctx".into()),
                Err(e) => return Err(e.into()),
            }
        };
        history.push(ChatMessage::assistant(reply));
    }
}

/// Streams one reply. `Ok(None)` when the context filled up before the reply ended.
fn stream_reply(
    ctx: &mut llama::Context,
    prompt: &[Token],
    sampler: &mut Sampler,
    params: &GenerateParams,
    out: &mut impl Write,
) -> Result<Option<String>, GenerateError> {
    let mut gen = ctx.generate_tokens(prompt, sampler, params)?;
    for piece in gen.by_ref() {
        let _ = write!(out, "{}", piece?);
        let _ = out.flush();
    }
    let _ = writeln!(out);
    let t = gen.timings();
    eprintln!(
        "[prompt {} tokens, {} decoded | reply {} tokens, {:.1} t/s]",
        t.prompt_tokens,
        t.prompt_decoded,
        t.generated,
        t.generation_tps()
    );
    Ok((gen.finish_reason() != Some(FinishReason::ContextFull)).then(|| gen.text().trim().to_string()))
}

/// Removes the oldest non-system exchange; false if there is nothing left to drop.
fn drop_oldest(history: &mut Vec<ChatMessage>) -> bool {
    let first = history.iter().position(|m| m.role != "system");
    match first {
        // Keep at least the newest user message.
        Some(i) if history.len() - i > 1 => {
            history.remove(i);
            if history.get(i).is_some_and(|m| m.role == "assistant") && history.len() - i > 1 {
                history.remove(i);
            }
            true
        }
        _ => false,
    }
}
