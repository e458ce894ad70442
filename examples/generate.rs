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
//! (see `llama::vet`). `--mmproj PATH` with `--image PATH` / `--audio PATH` (repeatable) puts
//! images and audio in the prompt (needs the `mtmd` feature): each stands where the prompt has
//! the projector's marker (`<__media__>`), or before the prompt when it has none. Text goes to
//! stdout as it is generated; timings go to stderr.

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
    /// Multimodal projector (an `mmproj` GGUF made for the model) that --image and --audio need.
    #[arg(long, value_name = "PATH")]
    mmproj: Option<PathBuf>,
    /// An image file (PNG, JPEG, BMP, GIF...) for the prompt; repeatable.
    #[arg(long, value_name = "PATH", action = clap::ArgAction::Append)]
    image: Vec<PathBuf>,
    /// An audio file (WAV, MP3, FLAC) for the prompt; repeatable.
    #[arg(long, value_name = "PATH", action = clap::ArgAction::Append)]
    audio: Vec<PathBuf>,
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
    let media = Media::load(&args, &model)?;
    let prompt_text = media.as_ref().map_or(prompt_text.clone(), |m| m.place_markers(&prompt_text));

    let text = if args.chat {
        model.apply_chat_template(&[ChatMessage::new("user", &prompt_text)], true)?
    } else {
        prompt_text.clone()
    };
    let mut prompt = match media {
        Some(media) => media.tokenize(&text)?,
        // The rendered template is trusted text whose control tokens must be parsed.
        None if args.chat => Prompt::Tokens(vocab.tokenize_with(&text, AddSpecial::Yes, SpecialSyntax::Tokens)?),
        None => Prompt::Tokens(vocab.tokenize(&text, AddSpecial::Yes)?),
    };
    let needed = prompt.n_pos() + args.n_predict;
    if needed > ctx.n_ctx() {
        return Err(format!(
            "prompt ({} positions) plus -n {} does not fit in the context of {} tokens; raise --ctx",
            prompt.n_pos(),
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
    let mut pos = match &mut prompt {
        Prompt::Tokens(tokens) => {
            ctx.decode_tokens(tokens, 0, 0)?;
            tokens.len()
        }
        #[cfg(feature = "mtmd")]
        Prompt::Chunks(chunks, projector) => projector.eval(&mut ctx, chunks, 0, 0)?,
    };
    let prompt_s = t1.elapsed().as_secs_f64();
    let mut batch = Batch::new(1, 1);

    let mut out = std::io::stdout().lock();
    if !args.chat {
        write!(out, "{prompt_text}")?;
    }
    let mut text = Utf8Decoder::default();
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
        prompt.n_tokens(),
        prompt.n_tokens() as f64 / prompt_s.max(1e-9),
        generated,
        generated as f64 / gen_s.max(1e-9),
    );
    Ok(())
}

/// A prompt read by the text model alone, or with media by the projector.
enum Prompt {
    Tokens(Vec<llama::Token>),
    /// Text and media, with the projector that evaluates them.
    #[cfg(feature = "mtmd")]
    Chunks(llama::media::Chunks, llama::media::Projector),
}

impl Prompt {
    fn n_tokens(&self) -> usize {
        match self {
            Prompt::Tokens(t) => t.len(),
            #[cfg(feature = "mtmd")]
            Prompt::Chunks(c, _) => c.n_tokens(),
        }
    }

    fn n_pos(&self) -> usize {
        match self {
            Prompt::Tokens(t) => t.len(),
            #[cfg(feature = "mtmd")]
            Prompt::Chunks(c, _) => c.n_pos(),
        }
    }
}

/// The projector and the decoded images and audio of `--mmproj`, `--image` and `--audio`.
#[cfg(feature = "mtmd")]
struct Media {
    projector: llama::media::Projector,
    items: Vec<llama::media::Media>,
}

#[cfg(feature = "mtmd")]
impl Media {
    fn load(args: &Args, model: &Model) -> Result<Option<Media>, Box<dyn std::error::Error>> {
        let Some(path) = &args.mmproj else {
            if args.image.is_empty() && args.audio.is_empty() {
                return Ok(None);
            }
            return Err("--image and --audio need --mmproj (the model's projector)".into());
        };
        let mut builder = llama::media::Projector::builder(path);
        if let Some(t) = args.threads {
            builder = builder.n_threads(t);
        }
        let projector = builder.load(model)?;
        let items = args
            .image
            .iter()
            .chain(&args.audio)
            .map(|p| projector.media_from_file(p).map_err(|e| format!("{}: {e}", p.display())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Media { projector, items }))
    }

    /// The prompt with a marker for each medium in front, unless it places them itself.
    fn place_markers(&self, prompt: &str) -> String {
        let marker = self.projector.marker();
        if prompt.contains(marker) {
            return prompt.to_string();
        }
        self.items.iter().map(|_| format!("{marker}\n")).collect::<String>() + prompt
    }

    fn tokenize(self, text: &str) -> Result<Prompt, llama::media::MediaError> {
        let items: Vec<&llama::media::Media> = self.items.iter().collect();
        let chunks = self.projector.tokenize(text, &items, AddSpecial::Yes)?;
        Ok(Prompt::Chunks(chunks, self.projector))
    }
}

/// Without the `mtmd` feature: the media flags are refused.
#[cfg(not(feature = "mtmd"))]
enum Media {}

#[cfg(not(feature = "mtmd"))]
impl Media {
    fn load(args: &Args, _: &Model) -> Result<Option<Media>, Box<dyn std::error::Error>> {
        if args.mmproj.is_some() || !args.image.is_empty() || !args.audio.is_empty() {
            return Err("--mmproj, --image and --audio need a build with the `mtmd` feature".into());
        }
        Ok(None)
    }

    fn place_markers(&self, _: &str) -> String {
        match *self {}
    }

    fn tokenize(self, _: &str) -> Result<Prompt, std::convert::Infallible> {
        match self {}
    }
}
