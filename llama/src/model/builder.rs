//! [`ModelBuilder`]: every model-loading option, then [`ModelBuilder::load`].

use std::ffi::{c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use super::gguf::{self, Scope};
use super::{Model, ModelHandle};
use crate::backend::{capture_errors, ensure_init, Device};
use crate::error::LoadError;

type Progress<'a> = Box<dyn FnMut(f32) -> bool + 'a>;

/// How a model is spread over several GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SplitMode {
    /// Everything on the main GPU.
    None,
    /// Whole layers (and their KV) per GPU (llama.cpp's default).
    Layer,
    /// Rows of each tensor split across GPUs.
    Row,
    /// Tensor parallelism.
    Tensor,
}

/// A metadata value that replaces the one in the GGUF file at load time.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaOverride {
    /// Integer value.
    Int(i64),
    /// Float value.
    Float(f64),
    /// Boolean value.
    Bool(bool),
    /// String value (at most 127 bytes).
    Str(String),
}

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
    mmap: bool,
    mlock: bool,
    overrides: Vec<(String, MetaOverride)>,
    tensor_split: Vec<f32>,
    devices: Option<Vec<Device>>,
    validate: bool,
}

impl<'a> ModelBuilder<'a> {
    pub(super) fn new(path: &Path) -> Self {
        ensure_init();
        // SAFETY: returns a plain struct by value.
        let params = unsafe { llama_sys::llama_model_default_params() };
        ModelBuilder {
            path: path.to_path_buf(),
            params,
            progress: None,
            mmap: true,
            mlock: false,
            overrides: Vec::new(),
            tensor_split: Vec::new(),
            devices: None,
            validate: true,
        }
    }

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

    /// How to split the model across GPUs.
    pub fn split_mode(mut self, mode: SplitMode) -> Self {
        use llama_sys::*;
        self.params.split_mode = match mode {
            SplitMode::None => LLAMA_SPLIT_MODE_NONE,
            SplitMode::Layer => LLAMA_SPLIT_MODE_LAYER,
            SplitMode::Row => LLAMA_SPLIT_MODE_ROW,
            SplitMode::Tensor => LLAMA_SPLIT_MODE_TENSOR,
        };
        self
    }

    /// Share of the model for each GPU, in device order (at most `llama_max_devices()` values;
    /// longer lists are an error at load time).
    pub fn tensor_split(mut self, proportions: &[f32]) -> Self {
        self.tensor_split = proportions.to_vec();
        self
    }

    /// Restrict offloading to these devices (see [`devices`](crate::devices)).
    pub fn devices(mut self, devices: &[Device]) -> Self {
        self.devices = Some(devices.to_vec());
        self
    }

    /// Memory-map the file (default on).
    pub fn mmap(mut self, yes: bool) -> Self {
        self.mmap = yes;
        self
    }

    /// Lock the weights in RAM so they are never swapped out.
    pub fn mlock(mut self, yes: bool) -> Self {
        self.mlock = yes;
        self
    }

    /// Load only the vocabulary (tokenize without the weights).
    pub fn vocab_only(mut self, yes: bool) -> Self {
        self.params.vocab_only = yes;
        self
    }

    /// Allow extra CPU buffer types that repack weights for faster kernels (default on). With
    /// repacking, the CPU backend picks different kernels for small and large batches, so the
    /// same row can get slightly different logits depending on batch size (seen up to ~1e-2
    /// relative on Q4_K models); turn it off for bit-stable comparisons across batch shapes.
    pub fn repack(mut self, yes: bool) -> Self {
        self.params.use_extra_bufts = yes;
        self
    }

    /// Validate tensor data while loading (slower; catches corrupt weights).
    pub fn check_tensors(mut self, yes: bool) -> Self {
        self.params.check_tensors = yes;
        self
    }

    /// Replace a metadata value of the file (e.g. `tokenizer.ggml.add_bos_token`).
    pub fn override_meta(mut self, key: impl Into<String>, value: MetaOverride) -> Self {
        self.overrides.push((key.into(), value));
        self
    }

    /// Called with the load progress in `0.0..=1.0`; return `false` to cancel loading, which then
    /// fails with [`LoadError::Cancelled`]. A panic in the callback cancels loading too.
    pub fn progress(mut self, f: impl FnMut(f32) -> bool + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Check the file in Rust before llama.cpp parses it (default on): structure, the
    /// hyper-parameters and the vocabulary llama.cpp asserts on. A malformed file is then
    /// [`LoadError::Malformed`] instead of a crash inside the C++ loader. Turning it off hands
    /// the file straight to llama.cpp's C++ parser (only the magic is checked): only for files
    /// you trust, or to test the C++ exception barrier.
    pub fn validate(mut self, yes: bool) -> Self {
        self.validate = yes;
        self
    }

    /// Runs only the validation [`load`](Self::load) would run first (for benchmarks).
    #[doc(hidden)]
    pub fn check_file(&self) -> Result<(), LoadError> {
        gguf::validate_with(&self.path, Scope::Model { vocab_only: self.params.vocab_only }, &self.overrides)
    }

    /// Loads the model.
    pub fn load(self) -> Result<Model, LoadError> {
        if self.validate {
            self.check_file()?;
        } else {
            gguf::check_magic(&self.path)?;
        }
        let c_path = CString::new(self.path.as_os_str().as_encoded_bytes()).map_err(|_| LoadError::InvalidPath)?;
        let mut params = self.params;
        params.load_mode = match (self.mmap, self.mlock) {
            (true, true) => llama_sys::LLAMA_LOAD_MODE_MMAP_MLOCK,
            (true, false) => llama_sys::LLAMA_LOAD_MODE_MMAP,
            (false, true) => llama_sys::LLAMA_LOAD_MODE_MLOCK,
            (false, false) => llama_sys::LLAMA_LOAD_MODE_NONE,
        };

        let overrides = kv_overrides(&self.overrides)?;
        if !overrides.is_empty() {
            params.kv_overrides = overrides.as_ptr();
        }
        // SAFETY: a pure query of a compile-time limit.
        let max_devices = unsafe { llama_sys::llama_max_devices() };
        let mut split = self.tensor_split.clone();
        if !split.is_empty() {
            if split.len() > max_devices {
                return Err(LoadError::InvalidParam("tensor_split has more entries than llama_max_devices()"));
            }
            // llama.cpp reads exactly llama_max_devices() values.
            split.resize(max_devices, 0.0);
            params.tensor_split = split.as_ptr();
        }
        let mut devices: Vec<llama_sys::ggml_backend_dev_t> = Vec::new();
        if let Some(list) = &self.devices {
            devices.extend(list.iter().map(Device::raw));
            devices.push(std::ptr::null_mut());
            params.devices = devices.as_mut_ptr();
        }

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
        let mut state = self.progress.map(|f| State { f, cancelled: false, panicked: false });
        if let Some(state) = state.as_mut() {
            params.progress_callback = Some(trampoline);
            params.progress_callback_user_data = (state as *mut State).cast();
        }

        let load = || {
            // SAFETY: `c_path` is NUL-terminated; every pointer in `params` (overrides ended by
            // an empty key, tensor_split of llama_max_devices() floats, devices ended by null,
            // the callback state) points into locals that outlive this synchronous call.
            unsafe { llama_sys::llama_rs_model_load_from_file(c_path.as_ptr(), params) }
        };
        let (raw, mut reason) = capture_errors(load);
        if let Some(what) = crate::barrier::take_exception() {
            reason = if reason.is_empty() { what } else { format!("{reason}; {what}") };
        }
        let handle = NonNull::new(raw).map(ModelHandle);
        match state {
            Some(State { panicked: true, .. }) => Err(LoadError::CallbackPanicked),
            Some(State { cancelled: true, .. }) => Err(LoadError::Cancelled),
            _ => handle.map(|h| Model { handle: Arc::new(h) }).ok_or(LoadError::Rejected { path: self.path, reason }),
        }
    }
}

/// Builds llama.cpp's override array, terminated by an entry with an empty key.
fn kv_overrides(list: &[(String, MetaOverride)]) -> Result<Vec<llama_sys::llama_model_kv_override>, LoadError> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(list.len() + 1);
    for (key, value) in list {
        let mut o = llama_sys::llama_model_kv_override::default();
        if key.is_empty() || key.len() >= o.key.len() || key.contains('\0') {
            return Err(LoadError::InvalidParam("metadata override keys must be 1..=127 bytes without NUL"));
        }
        for (dst, &b) in o.key.iter_mut().zip(key.as_bytes()) {
            *dst = b as std::ffi::c_char;
        }
        match value {
            MetaOverride::Int(v) => {
                o.tag = llama_sys::LLAMA_KV_OVERRIDE_TYPE_INT;
                o.__bindgen_anon_1.val_i64 = *v;
            }
            MetaOverride::Float(v) => {
                o.tag = llama_sys::LLAMA_KV_OVERRIDE_TYPE_FLOAT;
                o.__bindgen_anon_1.val_f64 = *v;
            }
            MetaOverride::Bool(v) => {
                o.tag = llama_sys::LLAMA_KV_OVERRIDE_TYPE_BOOL;
                o.__bindgen_anon_1.val_bool = *v;
            }
            MetaOverride::Str(s) => {
                if s.len() >= 128 || s.contains('\0') {
                    return Err(LoadError::InvalidParam("string overrides must be at most 127 bytes without NUL"));
                }
                o.tag = llama_sys::LLAMA_KV_OVERRIDE_TYPE_STR;
                let mut buf = [0 as std::ffi::c_char; 128];
                for (dst, &b) in buf.iter_mut().zip(s.as_bytes()) {
                    *dst = b as std::ffi::c_char;
                }
                o.__bindgen_anon_1.val_str = buf;
            }
        }
        out.push(o);
    }
    out.push(llama_sys::llama_model_kv_override::default());
    Ok(out)
}

/// Rejects files that do not exist, are not GGUF, or whose structure is malformed, before
/// llama.cpp sees them (adapters, quantizer input).
pub(crate) fn check_gguf(path: &Path) -> Result<(), LoadError> {
    gguf::validate(path, Scope::Structure)
}
