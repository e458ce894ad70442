//! Shared by the integration tests: one loaded default model per test binary.

#![allow(dead_code)]

pub mod engine;
pub mod gguf_file;
#[path = "../../../examples/common/models.rs"]
pub mod models;
pub mod projector;

use llama::Logits;
use std::sync::OnceLock;

/// The default model (SmolLM2-135M-Instruct Q4_1), fetched on first use and loaded once.
pub fn smollm2() -> &'static llama::Model {
    static MODEL: OnceLock<llama::Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = models::default_model().unwrap_or_else(|e| panic!("cannot fetch the default model: {e}"));
        llama::Model::load(path).expect("load the default model")
    })
}

/// Gemma-3-270M Q4_K_M, fetched on first use and loaded once.
pub fn gemma3() -> &'static llama::Model {
    static MODEL: OnceLock<llama::Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = models::ensure(&models::GEMMA3).unwrap_or_else(|e| panic!("cannot fetch Gemma-3: {e}"));
        llama::Model::load(path).expect("load Gemma-3")
    })
}

/// Both test models, for tests that must hold on each architecture.
pub fn both() -> [&'static llama::Model; 2] {
    [smollm2(), gemma3()]
}

/// Decodes `tokens` as sequence `seq` from position 0, logits for the last one.
pub fn prefill(ctx: &mut llama::Context, tokens: &[llama::Token], seq: usize) {
    let mut batch = llama::Batch::new(tokens.len().max(1), 1);
    batch.add_sequence(tokens, 0, seq, Logits::Want).unwrap();
    ctx.decode(&batch).unwrap();
}

/// Largest relative difference between two logit rows (relative to the row's max magnitude).
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().chain(b).fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
}

/// Index of the largest logit.
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
}

/// A unique scratch directory for one test.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("llama-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Small contexts with 1 thread: tests run in parallel on a 2-core machine.
pub fn small_ctx() -> llama::ContextParams {
    llama::ContextParams::default().n_ctx(512).n_batch(512).n_threads(1)
}
