//! Embeds a few sentences and prints their cosine similarities.
//!
//! ```text
//! cargo run --release --example embeddings [-- --model PATH [--untrusted]] ["sentence" ...]
//! ```
//!
//! `--untrusted` loads the model in a child process first (see `llama::vet`).

use llama::{cosine_similarity, Embedder, Model, Normalize};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // When started by `--untrusted` as the vetting child: vet the model and exit here.
    llama::vet::child_main_if_requested();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let untrusted = args.iter().position(|a| a == "--untrusted").map(|i| args.remove(i)).is_some();
    let model_path = match args.iter().position(|a| a == "--model") {
        Some(i) if i + 1 < args.len() => {
            let p = args.remove(i + 1);
            args.remove(i);
            p.into()
        }
        Some(_) => return Err("--model needs a path".into()),
        None => llama_examples::models::default_model()?,
    };
    let texts = if args.is_empty() {
        vec![
            "The cat sits on the mat.".to_string(),
            "A kitten is resting on a rug.".to_string(),
            "Stock markets fell sharply today.".to_string(),
            "Investors sold shares as prices dropped.".to_string(),
        ]
    } else {
        args
    };
    if untrusted {
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
