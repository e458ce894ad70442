//! Embeds a few sentences and prints their cosine similarities.
//!
//! ```text
//! cargo run --release --example embeddings [-- --model PATH [--untrusted]] ["sentence" ...]
//! ```
//!
//! `--help` lists the flags; `--untrusted` loads the model in a child process first (see
//! `llama::vet`).

use std::path::PathBuf;

use clap::Parser;
use llama::{cosine_similarity, Embedder, Model, Normalize};

/// Embeds a few sentences and prints their cosine similarities.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true)]
struct Args {
    /// GGUF model file (default: SmolLM2-135M-Instruct, fetched on first use).
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Load the model in a child process first, so a file that crashes llama.cpp's loader kills
    /// the child, not this program.
    #[arg(long)]
    untrusted: bool,
    /// Texts to compare (default: four built-in sentences).
    #[arg(value_name = "TEXT")]
    texts: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // When started by `--untrusted` as the vetting child: vet the model and exit here.
    llama::vet::child_main_if_requested();
    let args = Args::parse();
    let model_path = match args.model {
        Some(p) => p,
        None => llama_examples::models::default_model()?,
    };
    let texts = if args.texts.is_empty() {
        vec![
            "The cat sits on the mat.".to_string(),
            "A kitten is resting on a rug.".to_string(),
            "Stock markets fell sharply today.".to_string(),
            "Investors sold shares as prices dropped.".to_string(),
        ]
    } else {
        args.texts
    };
    if args.untrusted {
        llama::vet_model(&model_path)?;
    }
    let model = Model::load(model_path)?;
    let mut embedder = Embedder::new(&model, 512)?;
    let vectors = embedder.embed(&texts, Normalize::Unit)?;
    println!("{} texts, {} dimensions\n", vectors.len(), vectors[0].len());
    for (i, a) in vectors.iter().enumerate() {
        let row: Vec<String> = vectors.iter().map(|b| format!("{:6.3}", cosine_similarity(a, b))).collect();
        println!("{} | {:.40}", row.join(" "), texts[i]);
    }
    Ok(())
}
