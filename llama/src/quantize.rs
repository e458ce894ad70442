//! Re-quantizing GGUF models: [`quantize`] with [`QuantizeParams`].

use std::cell::RefCell;
use std::ffi::CString;
use std::path::Path;
use std::rc::Rc;

use crate::backend::{capture_errors_and, ensure_init};
use crate::model::WriteFailure;

/// Target file type of [`quantize`] (llama.cpp's `llama_ftype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(non_camel_case_types, missing_docs)]
pub enum Ftype {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q2_K_S,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ1_S,
    IQ1_M,
    IQ2_XXS,
    IQ2_XS,
    IQ2_S,
    IQ2_M,
    IQ3_XXS,
    IQ3_XS,
    IQ3_S,
    IQ3_M,
    IQ4_NL,
    IQ4_XS,
    /// Ternary, 1.69 bits per weight.
    TQ1_0,
    /// Ternary, 2.06 bits per weight.
    TQ2_0,
    MXFP4_MOE,
    NVFP4,
    Q1_0,
    Q2_0,
}

impl Ftype {
    /// Every file type, for iteration.
    pub const ALL: [Ftype; 36] = {
        use Ftype::*;
        [
            F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q2_K_S, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S,
            Q5_K_M, Q6_K, IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M, IQ3_XXS, IQ3_XS, IQ3_S, IQ3_M, IQ4_NL, IQ4_XS,
            TQ1_0, TQ2_0, MXFP4_MOE, NVFP4, Q1_0, Q2_0,
        ]
    };

    pub(crate) fn raw(self) -> llama_sys::llama_ftype {
        use llama_sys::*;
        match self {
            Ftype::F32 => LLAMA_FTYPE_ALL_F32,
            Ftype::F16 => LLAMA_FTYPE_MOSTLY_F16,
            Ftype::BF16 => LLAMA_FTYPE_MOSTLY_BF16,
            Ftype::Q4_0 => LLAMA_FTYPE_MOSTLY_Q4_0,
            Ftype::Q4_1 => LLAMA_FTYPE_MOSTLY_Q4_1,
            Ftype::Q5_0 => LLAMA_FTYPE_MOSTLY_Q5_0,
            Ftype::Q5_1 => LLAMA_FTYPE_MOSTLY_Q5_1,
            Ftype::Q8_0 => LLAMA_FTYPE_MOSTLY_Q8_0,
            Ftype::Q2_K => LLAMA_FTYPE_MOSTLY_Q2_K,
            Ftype::Q2_K_S => LLAMA_FTYPE_MOSTLY_Q2_K_S,
            Ftype::Q3_K_S => LLAMA_FTYPE_MOSTLY_Q3_K_S,
            Ftype::Q3_K_M => LLAMA_FTYPE_MOSTLY_Q3_K_M,
            Ftype::Q3_K_L => LLAMA_FTYPE_MOSTLY_Q3_K_L,
            Ftype::Q4_K_S => LLAMA_FTYPE_MOSTLY_Q4_K_S,
            Ftype::Q4_K_M => LLAMA_FTYPE_MOSTLY_Q4_K_M,
            Ftype::Q5_K_S => LLAMA_FTYPE_MOSTLY_Q5_K_S,
            Ftype::Q5_K_M => LLAMA_FTYPE_MOSTLY_Q5_K_M,
            Ftype::Q6_K => LLAMA_FTYPE_MOSTLY_Q6_K,
            Ftype::IQ1_S => LLAMA_FTYPE_MOSTLY_IQ1_S,
            Ftype::IQ1_M => LLAMA_FTYPE_MOSTLY_IQ1_M,
            Ftype::IQ2_XXS => LLAMA_FTYPE_MOSTLY_IQ2_XXS,
            Ftype::IQ2_XS => LLAMA_FTYPE_MOSTLY_IQ2_XS,
            Ftype::IQ2_S => LLAMA_FTYPE_MOSTLY_IQ2_S,
            Ftype::IQ2_M => LLAMA_FTYPE_MOSTLY_IQ2_M,
            Ftype::IQ3_XXS => LLAMA_FTYPE_MOSTLY_IQ3_XXS,
            Ftype::IQ3_XS => LLAMA_FTYPE_MOSTLY_IQ3_XS,
            Ftype::IQ3_S => LLAMA_FTYPE_MOSTLY_IQ3_S,
            Ftype::IQ3_M => LLAMA_FTYPE_MOSTLY_IQ3_M,
            Ftype::IQ4_NL => LLAMA_FTYPE_MOSTLY_IQ4_NL,
            Ftype::IQ4_XS => LLAMA_FTYPE_MOSTLY_IQ4_XS,
            Ftype::TQ1_0 => LLAMA_FTYPE_MOSTLY_TQ1_0,
            Ftype::TQ2_0 => LLAMA_FTYPE_MOSTLY_TQ2_0,
            Ftype::MXFP4_MOE => LLAMA_FTYPE_MOSTLY_MXFP4_MOE,
            Ftype::NVFP4 => LLAMA_FTYPE_MOSTLY_NVFP4,
            Ftype::Q1_0 => LLAMA_FTYPE_MOSTLY_Q1_0,
            Ftype::Q2_0 => LLAMA_FTYPE_MOSTLY_Q2_0,
        }
    }

    /// llama.cpp's name for the type, e.g. `Q8_0` or `Q4_K - Medium`.
    pub fn name(self) -> String {
        // SAFETY: returns a static string for any ftype value.
        unsafe { crate::backend::cstr_or_empty(llama_sys::llama_ftype_name(self.raw())) }
    }
}

/// Tensor element types for the output and token-embedding overrides, spelled as ggml spells
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs, non_camel_case_types)]
pub enum TensorType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl TensorType {
    fn raw(self) -> llama_sys::ggml_type {
        use llama_sys::*;
        match self {
            TensorType::F32 => GGML_TYPE_F32,
            TensorType::F16 => GGML_TYPE_F16,
            TensorType::BF16 => GGML_TYPE_BF16,
            TensorType::Q4_0 => GGML_TYPE_Q4_0,
            TensorType::Q4_1 => GGML_TYPE_Q4_1,
            TensorType::Q5_0 => GGML_TYPE_Q5_0,
            TensorType::Q5_1 => GGML_TYPE_Q5_1,
            TensorType::Q8_0 => GGML_TYPE_Q8_0,
            TensorType::Q2_K => GGML_TYPE_Q2_K,
            TensorType::Q3_K => GGML_TYPE_Q3_K,
            TensorType::Q4_K => GGML_TYPE_Q4_K,
            TensorType::Q5_K => GGML_TYPE_Q5_K,
            TensorType::Q6_K => GGML_TYPE_Q6_K,
        }
    }
}

/// Why quantization failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantizeError {
    /// A path contains a NUL byte.
    #[error("path contains a NUL byte")]
    InvalidPath,
    /// The input does not exist or is not GGUF.
    #[error(transparent)]
    Input(#[from] crate::LoadError),
    /// llama.cpp failed (unsupported type combination, I/O error, re-quantizing without
    /// `allow_requantize`...); carries llama.cpp's reason.
    #[error("llama.cpp could not quantize: {0}")]
    Failed(String),
    /// The progress callback panicked; carries the panic's message.
    #[error("quantize progress callback panicked: {0}")]
    CallbackPanicked(String),
}

/// Options for [`quantize`].
///
/// ```no_run
/// use llama::{quantize, Ftype, QuantizeParams};
/// quantize("in.gguf", "out-q8.gguf", QuantizeParams::new(Ftype::Q8_0).allow_requantize(true))?;
/// # Ok::<(), llama::QuantizeError>(())
/// ```
#[must_use]
pub struct QuantizeParams {
    raw: llama_sys::llama_model_quantize_params,
    progress: Option<Box<dyn FnMut(f32)>>,
}

impl std::fmt::Debug for QuantizeParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantizeParams")
            .field("ftype", &self.raw.ftype)
            .field("nthread", &self.raw.nthread)
            .field("allow_requantize", &self.raw.allow_requantize)
            .finish_non_exhaustive()
    }
}

impl QuantizeParams {
    /// Quantize to `ftype`, with the available cores and llama.cpp's other defaults.
    pub fn new(ftype: Ftype) -> Self {
        ensure_init();
        // SAFETY: returns a plain struct by value.
        let mut raw = unsafe { llama_sys::llama_model_quantize_default_params() };
        raw.ftype = ftype.raw();
        raw.nthread = i32::try_from(crate::context::default_threads()).unwrap_or(i32::MAX);
        QuantizeParams { raw, progress: None }
    }

    /// Worker threads (0: all hardware threads).
    pub fn threads(mut self, n: usize) -> Self {
        self.raw.nthread = i32::try_from(n).unwrap_or(i32::MAX);
        self
    }

    /// Allow re-quantizing tensors that are already quantized (e.g. Q4_1 → Q8_0); quality is
    /// bounded by the input's.
    pub fn allow_requantize(mut self, yes: bool) -> Self {
        self.raw.allow_requantize = yes;
        self
    }

    /// Quantize `output.weight` too (default on).
    pub fn quantize_output_tensor(mut self, yes: bool) -> Self {
        self.raw.quantize_output_tensor = yes;
        self
    }

    /// Type of the output tensor.
    pub fn output_tensor_type(mut self, t: TensorType) -> Self {
        self.raw.output_tensor_type = t.raw();
        self
    }

    /// Type of the token-embedding tensor.
    pub fn token_embedding_type(mut self, t: TensorType) -> Self {
        self.raw.token_embedding_type = t.raw();
        self
    }

    /// Use the target type for every tensor (no mixed-precision choices).
    pub fn pure(mut self, yes: bool) -> Self {
        self.raw.pure_ = yes;
        self
    }

    /// Only copy tensors (change metadata / split layout without re-quantizing).
    pub fn only_copy(mut self, yes: bool) -> Self {
        self.raw.only_copy = yes;
        self
    }

    /// Called with the fraction of tensors done, in `0.0..=1.0`, on the calling thread.
    pub fn progress(mut self, f: impl FnMut(f32) + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }
}

/// Quantizes the GGUF model at `input` into `output`. Blocks until done, reporting progress
/// to the callback set with [`QuantizeParams::progress`]. The output file appears only once it
/// is complete.
pub fn quantize(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    params: QuantizeParams,
) -> Result<(), QuantizeError> {
    let (input, output) = (input.as_ref(), output.as_ref());
    let QuantizeParams { raw, progress } = params;
    crate::model::check_gguf(input)?;
    let c_in = CString::new(input.as_os_str().as_encoded_bytes()).map_err(|_| QuantizeError::InvalidPath)?;
    // The progress callback runs inside llama.cpp's log callback, which must not unwind: its
    // first panic is kept here and reported once llama.cpp is done; it is not called again.
    let panicked = Rc::new(RefCell::new(None::<String>));
    let written = crate::model::write_whole(output, |c_tmp| {
        let run = || {
            // SAFETY: NUL-terminated paths; `raw` comes from llama.cpp's defaults with plain
            // values set and null pointer fields.
            unsafe { llama_sys::llama_rs_model_quantize(c_in.as_ptr(), c_tmp.as_ptr(), &raw) }
        };
        let mut progress = progress;
        let report = panicked.clone();
        // llama.cpp logs "[  i/  n] tensor..." per tensor on the calling thread.
        let on_line = move |line: &str| {
            let (Some(frac), Some(f)) = (parse_tensor_progress(line), progress.as_mut()) else { return };
            if report.borrow().is_some() {
                return;
            }
            if let Err(message) = crate::barrier::catch_panic(|| f(frac)) {
                *report.borrow_mut() = Some(message);
            }
        };
        let (rc, mut errors) = capture_errors_and(on_line, run);
        if let Some(what) = crate::barrier::take_exception() {
            errors = if errors.is_empty() { what } else { format!("{errors}; {what}") };
        }
        // A panicking callback fails the whole call: no output is kept.
        (rc == 0 && panicked.borrow().is_none(), errors)
    });
    if let Some(message) = panicked.take() {
        return Err(QuantizeError::CallbackPanicked(message));
    }
    written.map_err(|e| match e {
        WriteFailure::InvalidPath => QuantizeError::InvalidPath,
        WriteFailure::Rejected(errors) => {
            QuantizeError::Failed(if errors.is_empty() { input.display().to_string() } else { errors })
        }
        WriteFailure::Io(e) => QuantizeError::Failed(format!("{}: {e}", output.display())),
    })
}

/// Parses `[  12/ 272] name ...` into 12/272.
fn parse_tensor_progress(line: &str) -> Option<f32> {
    let inner = line.trim_start().strip_prefix('[')?.split(']').next()?;
    let (i, n) = inner.split_once('/')?;
    let (i, n): (f32, f32) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
    (n > 0.0).then(|| (i / n).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_tensor_progress_lines() {
        assert_eq!(super::parse_tensor_progress("[  68/ 272] blk.7.attn_k.weight - [576, 192]"), Some(0.25));
        assert_eq!(super::parse_tensor_progress("llama_model_quantize: done"), None);
    }
}
