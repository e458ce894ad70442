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

// The `server` target's body: request checking through `llama::server`'s public API.
#[path = "server.rs"]
#[cfg(feature = "server")]
pub mod server;

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
