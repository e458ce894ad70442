//! Loaded model weights: [`Model`] and its [`ModelBuilder`].

use std::ffi::{c_char, c_void, CString};
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::backend::{cstr_or_empty, ensure_init};
use crate::error::{ContextError, LoadError};
use crate::{Context, ContextParams, Vocab};

/// Owns the C model; freed when the last [`Model`] handle (including those held by contexts)
/// is dropped.
pub(crate) struct ModelHandle(NonNull<llama_sys::llama_model>);

// SAFETY: a loaded llama_model is immutable: llama.cpp only reads it after load (contexts keep
// their mutable state in llama_context), and its vocab/metadata getters and tokenizer are
// documented as thread-safe, so the handle may be sent to and shared between threads.
unsafe impl Send for ModelHandle {}
// SAFETY: see `Send` above: every operation reachable through `&Model` only reads the model.
unsafe impl Sync for ModelHandle {}

impl Drop for ModelHandle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from llama_model_load_from_file and this is its only owner;
        // contexts hold an `Arc` to this handle, so none outlives it.
        unsafe { llama_sys::llama_model_free(self.0.as_ptr()) }
    }
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

type Progress<'a> = Box<dyn FnMut(f32) -> bool + 'a>;

/// Options for loading a model. Created by [`Model::builder`].
///
/// ```no_run
/// let model = llama::Model::builder("model.gguf")
///     .gpu_layers(99)
///     .progress(|p| { eprint!("\r{:3.0}%", p * 100.0); true })
///     .load()?;
/// # Ok::<(), llama::LoadError>(())
/// ```
#[must_use = "a builder does nothing until `.load()`"]
pub struct ModelBuilder<'a> {
    path: PathBuf,
    params: llama_sys::llama_model_params,
    progress: Option<Progress<'a>>,
}

impl<'a> ModelBuilder<'a> {
    /// Layers to offload to the GPU; a negative value (or more than the model has) means all.
    /// Ignored by CPU-only builds.
    pub fn gpu_layers(mut self, n: i32) -> Self {
        self.params.n_gpu_layers = n;
        self
    }

    /// The GPU used for the whole model when it is not split.
    pub fn main_gpu(mut self, index: i32) -> Self {
        self.params.main_gpu = index;
        self
    }

    /// Load only the vocabulary (tokenize without the weights).
    pub fn vocab_only(mut self, yes: bool) -> Self {
        self.params.vocab_only = yes;
        self
    }

    /// Validate tensor data while loading (slower; catches corrupt weights).
    pub fn check_tensors(mut self, yes: bool) -> Self {
        self.params.check_tensors = yes;
        self
    }

    /// Called with the load progress in `0.0..=1.0`; return `false` to cancel loading, which then
    /// fails with [`LoadError::Cancelled`]. A panic in the callback cancels loading too.
    pub fn progress(mut self, f: impl FnMut(f32) -> bool + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Loads the model.
    pub fn load(self) -> Result<Model, LoadError> {
        ensure_init();
        check_gguf(&self.path)?;
        let c_path = CString::new(self.path.as_os_str().as_encoded_bytes()).map_err(|_| LoadError::InvalidPath)?;

        struct State<'a> {
            f: Progress<'a>,
            cancelled: bool,
            panicked: bool,
        }
        unsafe extern "C" fn trampoline(progress: f32, data: *mut c_void) -> bool {
            // SAFETY: `data` is the `State` below, alive and exclusively ours for the whole load.
            let state = unsafe { &mut *data.cast::<State>() };
            match catch_unwind(AssertUnwindSafe(|| (state.f)(progress))) {
                Ok(true) => true,
                Ok(false) => {
                    state.cancelled = true;
                    false
                }
                Err(_) => {
                    state.panicked = true;
                    false
                }
            }
        }

        let mut params = self.params;
        let mut state = self.progress.map(|f| State { f, cancelled: false, panicked: false });
        if let Some(state) = state.as_mut() {
            params.progress_callback = Some(trampoline);
            params.progress_callback_user_data = (state as *mut State).cast();
        }
        // SAFETY: `c_path` is NUL-terminated; `params` is fully initialised from the defaults and
        // its callback data points at `state`, which outlives this synchronous call.
        let raw = unsafe { llama_sys::llama_model_load_from_file(c_path.as_ptr(), params) };
        if let Some(state) = &state {
            if state.panicked {
                if let Some(p) = NonNull::new(raw) {
                    drop(ModelHandle(p));
                }
                return Err(LoadError::CallbackPanicked);
            }
            if state.cancelled {
                if let Some(p) = NonNull::new(raw) {
                    drop(ModelHandle(p));
                }
                return Err(LoadError::Cancelled);
            }
        }
        NonNull::new(raw).map(|p| Model { handle: Arc::new(ModelHandle(p)) }).ok_or(LoadError::Rejected(self.path))
    }
}

/// Rejects files that do not exist or are not GGUF before llama.cpp sees them.
fn check_gguf(path: &Path) -> Result<(), LoadError> {
    let io = |source| LoadError::Io { path: path.to_path_buf(), source };
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(io)?;
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == b"GGUF" => Ok(()),
        Ok(()) => Err(LoadError::NotGguf(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(LoadError::NotGguf(path.to_path_buf())),
        Err(e) => Err(io(e)),
    }
}

impl Model {
    /// Loads a model with default options (all layers on the GPU when one is built in, mmap on).
    pub fn load(path: impl AsRef<Path>) -> Result<Model, LoadError> {
        Model::builder(path).load()
    }

    /// Starts a [`ModelBuilder`] for `path`.
    pub fn builder<'a>(path: impl AsRef<Path>) -> ModelBuilder<'a> {
        ensure_init();
        // SAFETY: returns a plain struct by value.
        let params = unsafe { llama_sys::llama_model_default_params() };
        ModelBuilder { path: path.as_ref().to_path_buf(), params, progress: None }
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

    /// Context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        // SAFETY: model is alive.
        u32::try_from(unsafe { llama_sys::llama_model_n_ctx_train(self.as_ptr()) }).unwrap_or(0)
    }

    /// Embedding width.
    pub fn n_embd(&self) -> usize {
        // SAFETY: model is alive.
        usize::try_from(unsafe { llama_sys::llama_model_n_embd(self.as_ptr()) }).unwrap_or(0)
    }

    /// A metadata value by key (e.g. `general.architecture`), as text.
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        // SAFETY: model is alive, key is NUL-terminated; the callee writes at most `len` bytes.
        let s = read_string(|buf, len| unsafe {
            llama_sys::llama_model_meta_val_str(self.as_ptr(), key.as_ptr(), buf, len)
        });
        // The C API returns -1 (→ empty) when the key is missing.
        (!s.is_empty()).then_some(s)
    }

    /// The default chat template from the GGUF metadata, if any.
    pub fn chat_template(&self) -> Option<String> {
        // SAFETY: model is alive; a null name asks for the default template; the returned string
        // is owned by the model and copied before the borrow ends.
        let s = unsafe { cstr_or_empty(llama_sys::llama_model_chat_template(self.as_ptr(), std::ptr::null())) };
        (!s.is_empty()).then_some(s)
    }
}

/// Calls a C "write into buf, return the full length" function, growing the buffer as needed.
pub(crate) fn read_string(mut f: impl FnMut(*mut c_char, usize) -> i32) -> String {
    let mut buf = vec![0u8; 256];
    loop {
        let n = f(buf.as_mut_ptr().cast(), buf.len());
        let Ok(n) = usize::try_from(n) else { return String::new() };
        if n < buf.len() {
            buf.truncate(n);
            return String::from_utf8_lossy(&buf).into_owned();
        }
        buf.resize(n + 1, 0);
    }
}
