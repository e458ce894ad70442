//! Quick generation: stream a continuation of a prompt.
//!
//! ```text
//! cargo run --release --example generate -- "Your prompt"
//! cargo run --release --example generate -- --chat -n 64 --temp 0.7 "Tell me a joke"
//! ```
//!
//! With no `--model`, the default model (SmolLM2-135M-Instruct) is fetched on first use.
//! `--rpc HOST:PORT[,HOST:PORT]` places the layers on RPC servers (`examples/rpc_server.rs`;
//! needs the `rpc` feature).
//! `--untrusted` loads the model in a child process first, so a file that crashes llama.cpp's
//! loader kills the child, not this program (see `llama::vet`).
//! Text goes to stdout as it is generated; timings go to stderr.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use llama::Logits;
use llama::{
    AddSpecial, Batch, ChatMessage, ContextParams, ControlText, Model, Output, Sampler, SpecialSyntax, Utf8Decoder,
};

const USAGE: &str = "usage: generate [--model PATH] [-n N] [--temp T] [--top-k K] [--top-p P] \
[--seed S] [--threads N] [--ctx N] [--chat] [--untrusted] [--rpc HOST:PORT[,HOST:PORT]] [PROMPT]";

struct Args {
    model: Option<String>,
    prompt: String,
    n_predict: usize,
    temp: f32,
    top_k: i32,
    top_p: f32,
    seed: u32,
    threads: Option<usize>,
    n_ctx: usize,
    chat: bool,
    untrusted: bool,
    rpc: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        model: None,
        prompt: String::new(),
        n_predict: 128,
        temp: 0.0,
        top_k: 40,
        top_p: 0.95,
        seed: 42,
        threads: None,
        n_ctx: 2048,
        chat: false,
        untrusted: false,
        rpc: Vec::new(),
    };
    let mut prompt = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{name}: cannot parse {v:?}"))
        }
        match arg.as_str() {
            "--model" | "-m" => args.model = Some(value("--model")?),
            "-n" | "--n-predict" => args.n_predict = num("-n", value("-n")?)?,
            "--temp" => args.temp = num("--temp", value("--temp")?)?,
            "--top-k" => args.top_k = num("--top-k", value("--top-k")?)?,
            "--top-p" => args.top_p = num("--top-p", value("--top-p")?)?,
            "--seed" => args.seed = num("--seed", value("--seed")?)?,
            "--threads" | "-t" => args.threads = Some(num("--threads", value("--threads")?)?),
            "--ctx" | "-c" => args.n_ctx = num("--ctx", value("--ctx")?)?,
            "--chat" => args.chat = true,
            "--untrusted" => args.untrusted = true,
            "--rpc" => args.rpc = value("--rpc")?.split(',').map(|s| s.trim().to_string()).collect(),
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown flag {s}\n{USAGE}")),
            _ => prompt.push(arg),
        }
    }
    args.prompt = if prompt.is_empty() { "Once upon a time".into() } else { prompt.join(" ") };
    Ok(args)
}

fn main() -> ExitCode {
    // When started by `--untrusted` as the vetting child: vet the model and exit here.
    llama::vet::child_main_if_requested();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let path = match &args.model {
        Some(p) => p.into(),
        None => llama_examples::models::default_model()?,
    };

    if args.untrusted {
        llama::vet_model(&path)?;
    }
    let t0 = Instant::now();
    let model = Model::builder(&path).rpc_servers(&args.rpc).load()?;
    let load_s = t0.elapsed().as_secs_f64();

    let mut params = ContextParams::default().n_ctx(args.n_ctx);
    if let Some(t) = args.threads {
        params = params.n_threads(t);
    }
    let mut ctx = model.context(params)?;
    let vocab = model.vocab();

    let prompt = if args.chat {
        let text = model.apply_chat_template(&[ChatMessage::new("user", &args.prompt)], true)?;
        // The rendered template is trusted text whose control tokens must be parsed.
        vocab.tokenize_with(&text, AddSpecial::Yes, SpecialSyntax::Tokens)?
    } else {
        vocab.tokenize(&args.prompt, AddSpecial::Yes)?
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
        write!(out, "{}", args.prompt)?;
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
