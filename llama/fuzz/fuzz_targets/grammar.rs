//! Arbitrary GBNF through `Sampler::grammar` on the real vocabulary; a grammar that parses is
//! then driven for a few tokens over the first 256 ids (mostly single characters).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llama::{Sampler, TokenDataArray};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let model = llama_fuzz::vocab_model();
    let Ok(mut sampler) = Sampler::chain().grammar(model, text, "root").map(|s| s.greedy_pick()) else { return };
    let logits: Vec<f32> = (0..256).map(|i| ((i * 37) % 11) as f32).collect();
    for _ in 0..8 {
        let mut candidates = TokenDataArray::from_logits(&logits);
        if sampler.apply(&mut candidates).is_err() {
            break;
        }
        let Some(pick) = candidates.selected().filter(|t| t.logit.is_finite()).map(|t| t.id) else { break };
        if sampler.accept(pick).is_err() {
            break;
        }
    }
});
