//! Shared by the fuzz targets: the default model, loaded once per process, and a scratch file.

use std::path::PathBuf;
use std::sync::OnceLock;

#[path = "../../../examples/common/models.rs"]
#[allow(dead_code)]
mod models;

#[path = "targets.rs"]
pub mod targets;

fn default_model_path() -> PathBuf {
    // A fuzz run cannot start without the model; failing loudly here is the clearest report.
    models::default_model().unwrap_or_else(|e| panic!("cannot fetch the default model: {e}"))
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

/// A file path private to this process (fuzzers may run several jobs side by side).
pub fn scratch_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("llama-fuzz-{}-{name}", std::process::id()))
}
