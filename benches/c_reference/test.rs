//! The safe API's greedy loop produces exactly the tokens of the same loop written in C against
//! llama.h, on ten prompts (512-token prompt, 128 generated, 2 threads) and on both models.

use llama_examples::greedy::{c_greedy, rust_greedy, PROMPTS};
use llama_examples::models;

#[cfg(feature = "mtmd")]
#[path = "../../llama/tests/common/gguf_file.rs"]
#[allow(dead_code)]
mod gguf_file;
#[cfg(feature = "mtmd")]
#[path = "../../llama/tests/common/projector.rs"]
#[allow(dead_code)]
mod projector;

#[test]
fn rust_and_c_greedy_tokens_are_identical() {
    let threads = 2;
    let smol = models::default_model().unwrap();
    let gemma = models::ensure(&models::GEMMA3).unwrap();
    let smol_model = llama::Model::load(&smol).unwrap();
    let gemma_model = llama::Model::load(&gemma).unwrap();
    let cases =
        PROMPTS.iter().map(|p| (&smol, &smol_model, *p)).chain(PROMPTS[..2].iter().map(|p| (&gemma, &gemma_model, *p)));
    for (path, model, prompt) in cases {
        let rust = rust_greedy(model, prompt, 512, 128, threads).unwrap();
        let c = c_greedy(path, prompt, 512, 128, threads).unwrap();
        assert_eq!(rust.tokens.len(), 128);
        assert_eq!(rust.tokens, c.tokens, "{} on {prompt:?}", model.architecture());
    }
}

/// Images and audio: the safe API's chunk counts, evaluation and greedy tokens equal those of
/// the same steps written against mtmd.h (mtmd's own helpers count and evaluate there), on the
/// tiny random projectors the tests generate; two different media give different answers.
#[cfg(feature = "mtmd")]
#[test]
fn rust_and_c_media_runs_are_identical() {
    use llama_examples::media::{c_media_greedy, rust_media_greedy};
    use projector::{bmp, tiny_audio_projector, tiny_vision_projector, wav, AUDIO_TOKENS, IMAGE_TOKENS};

    let threads = 2;
    let smol = models::default_model().unwrap();
    let model = llama::Model::load(&smol).unwrap();
    let dir = std::env::temp_dir().join(format!("llama-c-media-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let n_embd = u32::try_from(model.n_embd()).unwrap();
    let vision = dir.join("vision.gguf");
    std::fs::write(&vision, tiny_vision_projector(n_embd).bytes()).unwrap();
    let audio = dir.join("audio.gguf");
    std::fs::write(&audio, tiny_audio_projector(n_embd).bytes()).unwrap();

    let prompt = "<|im_start|>user\nWhat is this? <__media__><|im_end|>\n<|im_start|>assistant\n";
    let cases = [
        ("image", &vision, bmp(40, 30, 0), bmp(40, 30, 99), IMAGE_TOKENS),
        ("audio", &audio, wav(16_000, 1.0), wav(8_000, 0.7), AUDIO_TOKENS),
    ];
    for (what, mmproj, file, other, media_tokens) in cases {
        let rust = rust_media_greedy(&model, mmproj, &file, prompt, 24, threads).unwrap();
        let c = c_media_greedy(&smol, mmproj, &file, prompt, 24, threads).unwrap();
        assert_eq!(rust.counts, c.counts, "{what}: chunks, tokens, positions");
        assert_eq!(rust.counts.0, 3, "{what}: text, medium, text");
        assert!(rust.counts.1 > media_tokens, "{what}: {:?}", rust.counts);
        assert_eq!(rust.tokens, c.tokens, "{what}: greedy tokens");
        let different = rust_media_greedy(&model, mmproj, &other, prompt, 24, threads).unwrap();
        assert_ne!(different.tokens, rust.tokens, "{what}: another medium, another answer");
    }
}
