//! Shared by the integration tests: one loaded default model per test binary.

#![allow(dead_code)]

#[path = "../../../examples/common/models.rs"]
pub mod models;

use std::sync::OnceLock;

/// The default model (SmolLM2-135M-Instruct Q4_1), fetched on first use and loaded once.
pub fn smollm2() -> &'static llama::Model {
    static MODEL: OnceLock<llama::Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = models::default_model().unwrap_or_else(|e| panic!("cannot fetch the default model: {e}"));
        llama::Model::load(path).expect("load the default model")
    })
}

/// Small contexts with 1 thread: tests run in parallel on a 2-core machine.
pub fn small_ctx() -> llama::ContextParams {
    llama::ContextParams::default().n_ctx(512).n_batch(512).n_threads(1)
}
