//! The safe API's greedy loop produces exactly the tokens of the same loop written in C against
//! llama.h, on ten prompts (512-token prompt, 128 generated, 2 threads) and on both models.

use llama_examples::greedy::{c_greedy, rust_greedy, PROMPTS};
use llama_examples::models;

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
