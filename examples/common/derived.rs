//! Models derived from the downloaded ones with the crate's own quantize API, kept in the model
//! cache: the same weights in another type, to see what the type's kernels change.

use std::error::Error;
use std::path::{Path, PathBuf};

use llama::{Ftype, QuantizeParams};

/// `src` re-quantized to `kind` (`q4_0`, `q8_0` or `f16`), made once and cached under
/// `<model cache>/derived/`.
pub fn requantized(src: &Path, kind: &str) -> Result<PathBuf, Box<dyn Error>> {
    let ftype = match kind {
        "q4_0" => Ftype::Q4_0,
        "q8_0" => Ftype::Q8_0,
        "f16" => Ftype::F16,
        other => return Err(format!("re-quantization takes q4_0, q8_0 or f16, not {other}").into()),
    };
    let stem = src.file_stem().and_then(|s| s.to_str()).ok_or("model path has no file name")?;
    let dir = crate::models::cache_dir().join("derived");
    let out = dir.join(format!("{stem}.{kind}.gguf"));
    if !out.exists() {
        std::fs::create_dir_all(&dir)?;
        // quantize writes aside and renames: an interrupted run never leaves a partial model.
        llama::quantize(src, &out, QuantizeParams::new(ftype).allow_requantize(true))?;
    }
    Ok(out)
}
