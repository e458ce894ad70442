//! Arbitrary bytes as a model file: the Rust GGUF validation, then llama.cpp's loader for what
//! passes it (vocabulary only, then everything), then a context and one decoded token for what
//! loads. Any of these may refuse; none may crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llama::{Batch, ContextParams, Model, Token};

fuzz_target!(|data: &[u8]| {
    let path = llama_fuzz::scratch_file("model.gguf");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = Model::builder(&path).vocab_only(true).load();
    let Ok(model) = Model::builder(&path).load() else { return };
    let Ok(mut ctx) = model.context(ContextParams::default().n_ctx(16).n_batch(16).n_threads(1)) else { return };
    let mut batch = Batch::new(1, 1);
    if batch.add(Token(0), 0, &[0], true).is_ok() {
        let _ = ctx.decode(&batch);
    }
});
