//! Loaded model weights: [`Model`] and its [`ModelBuilder`].

mod builder;
mod gguf;

pub(crate) use builder::check_gguf;
pub use builder::{LazyMode, MetaOverride, ModelBuilder, Placement, SplitMode};
#[cfg(feature = "mtmd")]
pub(crate) use gguf::projector_kinds;

use std::ffi::{c_char, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::backend::{capture_errors, cstr_or_empty};
use crate::error::{ContextError, LoadError, SaveError};
use crate::{Context, ContextParams, Vocab};

/// Owns the C model; freed when the last [`Model`] handle (including those held by contexts
/// and adapters) is dropped. The lease marks the RPC servers the model is placed on as in use
/// until after the model is freed (fields drop after `drop`).
pub(crate) struct ModelHandle(
    pub(crate) NonNull<llama_sys::llama_model>,
    // Never read: held for its `Drop`.
    #[allow(dead_code)] pub(crate) crate::rpc::Lease,
);

// SAFETY: a loaded llama_model is immutable: llama.cpp only reads it after load (contexts keep
// their mutable state in llama_context), and its vocab/metadata getters and tokenizer are
// documented as thread-safe, so the handle may be sent to and shared between threads.
unsafe impl Send for ModelHandle {}
// SAFETY: see `Send` above: every operation reachable through `&Model` only reads the model.
unsafe impl Sync for ModelHandle {}

impl Drop for ModelHandle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from llama_model_load_from_file and this is its only owner;
        // contexts and adapters hold an `Arc` to this handle, so none outlives it.
        unsafe { llama_sys::llama_model_free(self.0.as_ptr()) }
    }
}

/// How positions are encoded by the model's rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RopeType {
    /// No RoPE.
    None,
    /// Original (interleaved) RoPE.
    Norm,
    /// GPT-NeoX style.
    Neox,
    /// Multi-section RoPE (several positions per token).
    MRope,
    /// Interleaved multi-section RoPE.
    IMRope,
    /// Vision RoPE.
    Vision,
}

/// A loaded GGUF model: read-only weights and vocabulary.
///
/// Cloning is cheap (a reference count); clones may be used from any thread. Contexts created
/// from it keep it alive.
///
/// ```no_run
/// let model = llama::Model::load("model.gguf")?;
/// println!("{} ({} parameters)", model.description(), model.n_params());
/// # Ok::<(), llama::LoadError>(())
/// ```
#[derive(Clone)]
pub struct Model {
    pub(crate) handle: Arc<ModelHandle>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("description", &self.description()).finish()
    }
}

macro_rules! int_getter {
    ($(#[$doc:meta])* $name:ident => $c:ident) => {
        $(#[$doc])*
        pub fn $name(&self) -> usize {
            // SAFETY: the model is alive; a plain getter.
            usize::try_from(unsafe { llama_sys::$c(self.as_ptr()) }).unwrap_or(0)
        }
    };
}

impl Model {
    /// Loads a model with default options (all layers on the GPU when one is built in, mmap on).
    pub fn load(path: impl AsRef<Path>) -> Result<Model, LoadError> {
        Model::builder(path).load()
    }

    /// Starts a [`ModelBuilder`] for `path`.
    pub fn builder<'a>(path: impl AsRef<Path>) -> ModelBuilder<'a> {
        ModelBuilder::new(path.as_ref())
    }

    pub(crate) fn as_ptr(&self) -> *mut llama_sys::llama_model {
        self.handle.0.as_ptr()
    }

    /// Creates an inference context (KV cache and compute buffers) on this model.
    pub fn context(&self, params: ContextParams) -> Result<Context, ContextError> {
        Context::new(self, params)
    }

    /// The model's vocabulary.
    pub fn vocab(&self) -> Vocab<'_> {
        // SAFETY: the model is alive for `'_`; the vocab is owned by the model.
        let ptr = unsafe { llama_sys::llama_model_get_vocab(self.as_ptr()) };
        Vocab::new(ptr)
    }

    /// A one-line description such as `llama 135M Q4_1`.
    pub fn description(&self) -> String {
        // SAFETY: model is alive; the callee writes at most `len` bytes into the buffer.
        read_string(|buf, len| unsafe { llama_sys::llama_model_desc(self.as_ptr(), buf, len) })
    }

    /// The architecture name (`general.architecture`), e.g. `llama` or `gemma3`.
    pub fn architecture(&self) -> String {
        self.meta("general.architecture").unwrap_or_default()
    }

    /// Number of parameters.
    pub fn n_params(&self) -> u64 {
        // SAFETY: model is alive.
        unsafe { llama_sys::llama_model_n_params(self.as_ptr()) }
    }

    /// Size of all tensors in bytes.
    pub fn size(&self) -> u64 {
        // SAFETY: model is alive.
        unsafe { llama_sys::llama_model_size(self.as_ptr()) }
    }

    int_getter!(
        /// Context length the model was trained with.
        n_ctx_train => llama_model_n_ctx_train
    );
    int_getter!(
        /// Embedding width.
        n_embd => llama_model_n_embd
    );
    int_getter!(
        /// Width of output embeddings (usually `n_embd`).
        n_embd_out => llama_model_n_embd_out
    );
    int_getter!(
        /// Number of layers.
        n_layer => llama_model_n_layer
    );
    int_getter!(
        /// Number of attention heads.
        n_head => llama_model_n_head
    );
    int_getter!(
        /// Number of key/value heads.
        n_head_kv => llama_model_n_head_kv
    );
    int_getter!(
        /// Sliding-window size (0 if the model has none).
        n_swa => llama_model_n_swa
    );

    /// The model's RoPE variant.
    pub fn rope_type(&self) -> RopeType {
        use llama_sys::*;
        // SAFETY: model is alive.
        match unsafe { llama_model_rope_type(self.as_ptr()) } {
            LLAMA_ROPE_TYPE_NORM => RopeType::Norm,
            LLAMA_ROPE_TYPE_NEOX => RopeType::Neox,
            LLAMA_ROPE_TYPE_MROPE => RopeType::MRope,
            LLAMA_ROPE_TYPE_IMROPE => RopeType::IMRope,
            LLAMA_ROPE_TYPE_VISION => RopeType::Vision,
            _ => RopeType::None,
        }
    }

    /// Positions per token: 4 for multi-section RoPE, else 1.
    pub(crate) fn n_pos_per_embd(&self) -> usize {
        match self.rope_type() {
            RopeType::MRope | RopeType::IMRope | RopeType::Vision => 4,
            _ => 1,
        }
    }

    /// Whether the model has an encoder (e.g. T5).
    pub fn has_encoder(&self) -> bool {
        // SAFETY: model is alive.
        unsafe { llama_sys::llama_model_has_encoder(self.as_ptr()) }
    }

    /// Whether the model has a decoder.
    pub fn has_decoder(&self) -> bool {
        // SAFETY: model is alive.
        unsafe { llama_sys::llama_model_has_decoder(self.as_ptr()) }
    }

    /// Whether the model is recurrent (Mamba, RWKV, ...).
    pub fn is_recurrent(&self) -> bool {
        // SAFETY: model is alive.
        unsafe { llama_sys::llama_model_is_recurrent(self.as_ptr()) }
    }

    /// A metadata value by key (e.g. `general.architecture`), as text. Arrays are not returned.
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        // SAFETY: model is alive, key is NUL-terminated; the callee writes at most `len` bytes.
        read_string_opt(|buf, len| unsafe {
            llama_sys::llama_model_meta_val_str(self.as_ptr(), key.as_ptr(), buf, len)
        })
    }

    /// Every scalar metadata key/value pair, in file order.
    pub fn metadata(&self) -> Vec<(String, String)> {
        // SAFETY: model is alive.
        let n = unsafe { llama_sys::llama_model_meta_count(self.as_ptr()) };
        (0..n)
            .filter_map(|i| {
                // SAFETY: `i` is below the count; the callees write at most `len` bytes.
                let key = read_string_opt(|buf, len| unsafe {
                    llama_sys::llama_model_meta_key_by_index(self.as_ptr(), i, buf, len)
                })?;
                // SAFETY: as above.
                let value = read_string_opt(|buf, len| unsafe {
                    llama_sys::llama_model_meta_val_str_by_index(self.as_ptr(), i, buf, len)
                })?;
                Some((key, value))
            })
            .collect()
    }

    /// The default chat template from the GGUF metadata, if any.
    pub fn chat_template(&self) -> Option<String> {
        self.chat_template_named(None)
    }

    /// A named chat template (e.g. `tool_use`), or the default one for `None`.
    pub fn chat_template_named(&self, name: Option<&str>) -> Option<String> {
        let name = name.map(CString::new).transpose().ok()?;
        // SAFETY: model is alive; name is null or NUL-terminated; the returned string is owned
        // by the model and copied before the borrow ends.
        let s = unsafe {
            cstr_or_empty(llama_sys::llama_model_chat_template(
                self.as_ptr(),
                name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr()),
            ))
        };
        (!s.is_empty()).then_some(s)
    }

    /// Writes the model (weights and metadata) to a GGUF file. The file appears only once it
    /// is complete.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), SaveError> {
        let path = path.as_ref();
        write_whole(path, |c_tmp| {
            let save = || {
                // SAFETY: model alive, path NUL-terminated; the shim turns a C++ exception into
                // -1. The GGUF writer reports I/O failure by logging and leaving no file.
                unsafe { llama_sys::llama_rs_model_save_to_file(self.as_ptr(), c_tmp.as_ptr()) }
            };
            let (rc, reason) = capture_errors(save);
            (rc == 0, reason)
        })
        .map_err(|e| match e {
            WriteFailure::InvalidPath => SaveError::InvalidPath,
            WriteFailure::Rejected(reason) => SaveError::Rejected { path: path.to_path_buf(), reason },
            WriteFailure::Io(source) => SaveError::Io { path: path.to_path_buf(), source },
        })
    }
}

/// Why [`write_whole`] wrote nothing.
pub(crate) enum WriteFailure {
    InvalidPath,
    /// The writer failed or left no file; what llama.cpp said.
    Rejected(String),
    /// The rename into place failed.
    Io(std::io::Error),
}

/// Has `write` (llama.cpp's model writers: save, quantize) write `path.partial-PID`, then
/// renames it to `path`: a crash or a failure midway never leaves a truncated model where a
/// reader would load it. `write` returns whether it succeeded and what llama.cpp logged.
pub(crate) fn write_whole(path: &Path, write: impl FnOnce(&CStr) -> (bool, String)) -> Result<(), WriteFailure> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".partial-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let c_tmp = CString::new(tmp.as_os_str().as_encoded_bytes()).map_err(|_| WriteFailure::InvalidPath)?;
    let (ok, reason) = write(&c_tmp);
    if !ok || !tmp.is_file() {
        let _ = std::fs::remove_file(&tmp);
        return Err(WriteFailure::Rejected(reason));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        WriteFailure::Io(e)
    })
}

/// Calls a C "write into buf, return the full length or -1" function, growing the buffer as
/// needed. `None` when the callee reports failure.
pub(crate) fn read_string_opt(mut f: impl FnMut(*mut c_char, usize) -> i32) -> Option<String> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = usize::try_from(f(buf.as_mut_ptr().cast(), buf.len())).ok()?;
        if n < buf.len() {
            buf.truncate(n);
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        buf.resize(n + 1, 0);
    }
}

/// [`read_string_opt`], with failure as an empty string.
pub(crate) fn read_string(f: impl FnMut(*mut c_char, usize) -> i32) -> String {
    read_string_opt(f).unwrap_or_default()
}
