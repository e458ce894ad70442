//! Shared by the fuzz targets: the default model, loaded once per process, and a scratch file.

use std::path::PathBuf;
use std::sync::OnceLock;

#[path = "../../../examples/common/models.rs"]
#[allow(dead_code)]
mod fetch;

#[path = "targets.rs"]
pub mod targets;

// The tests' GGUF reader and writer, and the `metadata` target's edits on what it reads.
#[path = "../../tests/common/gguf_file.rs"]
#[allow(dead_code)]
pub mod gguf_file;
#[path = "mutate.rs"]
pub mod mutate;

// The server example's modules at this crate's root, where they expect each other, for the
// `server` target (`server.rs`). Only request checking is driven. Only in fuzz builds
// (`--cfg fuzzing`): `llama/tests/fuzz_replay.rs` compiles this file without the server's
// dependencies (the server target's seeds replay in `examples/server/tests/routes.rs`).
#[path = "../../../examples/server/access_log.rs"]
#[cfg(fuzzing)]
#[allow(dead_code)]
mod access_log;
#[path = "../../../examples/server/auth.rs"]
#[cfg(fuzzing)]
#[allow(dead_code)]
mod auth;
#[path = "../../../examples/server/body.rs"]
#[cfg(fuzzing)]
#[allow(dead_code)]
mod body;
#[path = "../../../examples/server/error.rs"]
#[cfg(fuzzing)]
#[allow(dead_code)]
mod error;
#[path = "../../../examples/server/generation.rs"]
#[cfg(fuzzing)]
#[allow(dead_code)]
mod generation;
#[path = "../../../examples/server/keep_alive.rs"]
#[cfg(fuzzing)]
#[allow(dead_code)]
mod keep_alive;
#[path = "../../../examples/server/metrics.rs"]
#[cfg(fuzzing)]
#[allow(dead_code)]
mod metrics;
#[path = "../../../examples/server/models.rs"]
#[cfg(fuzzing)]
#[allow(dead_code)]
mod models;
#[path = "../../../examples/server/openai.rs"]
#[cfg(fuzzing)]
#[allow(dead_code)]
mod openai;
#[path = "../../../examples/server/prompt.rs"]
#[cfg(fuzzing)]
#[allow(dead_code)]
mod prompt;
#[path = "../../../examples/server/routes.rs"]
#[cfg(fuzzing)]
#[allow(dead_code)]
mod routes;
#[path = "../../../examples/server/sampling.rs"]
#[cfg(fuzzing)]
#[allow(dead_code)]
mod sampling;
#[cfg(fuzzing)]
#[path = "server.rs"]
pub mod server;
#[path = "../../../examples/server/tools.rs"]
#[cfg(fuzzing)]
#[allow(dead_code)]
mod tools;

fn default_model_path() -> PathBuf {
    // A fuzz run cannot start without the model; failing loudly here is the clearest report.
    fetch::default_model().unwrap_or_else(|e| panic!("cannot fetch the default model: {e}"))
}

/// The default model's vocabulary (loaded without weights).
pub fn vocab_model() -> &'static llama::Model {
    static MODEL: OnceLock<llama::Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = default_model_path();
        llama::Model::builder(&path).vocab_only(true).load().unwrap_or_else(|e| panic!("load {path:?}: {e}"))
    })
}

/// The whole default model.
pub fn full_model() -> &'static llama::Model {
    static MODEL: OnceLock<llama::Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = default_model_path();
        llama::Model::load(&path).unwrap_or_else(|e| panic!("load {path:?}: {e}"))
    })
}

/// A real model taken apart, once per process: SmolLM2 (llama), or Gemma-3 when `gemma`.
pub fn real_model(gemma: bool) -> &'static gguf_file::Gguf {
    static MODELS: [OnceLock<gguf_file::Gguf>; 2] = [OnceLock::new(), OnceLock::new()];
    MODELS[usize::from(gemma)].get_or_init(|| {
        let path = if gemma { fetch::ensure(&fetch::GEMMA3) } else { fetch::default_model() };
        let path = path.unwrap_or_else(|e| panic!("cannot fetch the model: {e}"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
        gguf_file::Gguf::parse(&bytes).unwrap_or_else(|e| panic!("parse {path:?}: {e}"))
    })
}

/// A file path private to this process (fuzzers may run several jobs side by side).
pub fn scratch_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("llama-fuzz-{}-{name}", std::process::id()))
}
