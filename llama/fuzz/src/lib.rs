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
// The `media` target's tiny random projectors.
#[path = "../../tests/common/projector.rs"]
#[cfg(feature = "mtmd")]
#[allow(dead_code)]
pub mod projector;

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

/// The tiny vision (`audio` false) or audio projector for the whole default model, written
/// and loaded once per process.
#[cfg(feature = "mtmd")]
pub fn projector(audio: bool) -> &'static llama::media::Projector {
    static PROJECTORS: [OnceLock<llama::media::Projector>; 2] = [OnceLock::new(), OnceLock::new()];
    PROJECTORS[usize::from(audio)].get_or_init(|| {
        let n_embd = u32::try_from(full_model().n_embd()).unwrap_or(0);
        let gguf =
            if audio { projector::tiny_audio_projector(n_embd) } else { projector::tiny_vision_projector(n_embd) };
        let path = scratch_file(if audio { "audio.mmproj" } else { "vision.mmproj" });
        std::fs::write(&path, gguf.bytes()).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        llama::media::Projector::builder(&path).n_threads(1).load(full_model()).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// A file path private to this process (fuzzers may run several jobs side by side).
pub fn scratch_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("llama-fuzz-{}-{name}", std::process::id()))
}
