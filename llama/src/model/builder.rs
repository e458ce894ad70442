//! [`ModelBuilder`]: every model-loading option, then [`ModelBuilder::load`].

use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use super::gguf::{self, Scope};
use super::{Model, ModelHandle};
use crate::backend::{capture_errors, devices, ensure_init, BufferType, Device, DeviceKind};
use crate::error::LoadError;
use crate::rpc::{self, Lease};

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

/// Where [`ModelBuilder::override_tensor`] puts the tensors a pattern matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// In this device's memory (its [`buffer_type`](Device::buffer_type)).
    Device(Device),
    /// In this kind of memory.
    Buffer(BufferType),
}

impl From<Device> for Placement {
    fn from(d: Device) -> Self {
        Placement::Device(d)
    }
}

impl From<BufferType> for Placement {
    fn from(b: BufferType) -> Self {
        Placement::Buffer(b)
    }
}

/// When llama.cpp reads tensor data from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LazyMode {
    /// Read every tensor whole at load time.
    Off,
    /// Read rows on demand only for tensors the architecture marks and that exceed 4 GiB
    /// (llama.cpp's default; needs mmap).
    Auto,
    /// Read the rows of every tensor the architecture marks on demand (needs mmap).
    On,
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
    rpc_servers: Vec<String>,
    tensor_overrides: Vec<(String, Placement)>,
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
            rpc_servers: Vec::new(),
            tensor_overrides: Vec::new(),
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

    /// Restrict offloading to these devices (see [`devices`](crate::devices)), in this order;
    /// devices of RPC servers ([`rpc::connect`](crate::rpc::connect)) included.
    pub fn devices(mut self, devices: &[Device]) -> Self {
        self.devices = Some(devices.to_vec());
        self
    }

    /// Places layers on these RPC servers (`HOST:PORT`, see [`rpc`](crate::rpc)), ahead of
    /// this machine's GPUs (or of the devices given to [`devices`](Self::devices)), as
    /// llama.cpp's `--rpc` does: with the default [`gpu_layers`](Self::gpu_layers), every
    /// layer goes to them, split by their free memory (or by
    /// [`tensor_split`](Self::tensor_split)). Each server is checked before ggml connects, so an
    /// unreachable or incompatible one is [`LoadError::Rpc`]; what can still abort is in the
    /// [`rpc`](crate::rpc) module docs.
    ///
    /// ```no_run
    /// let model = llama::Model::builder("big.gguf")
    ///     .rpc_servers(&["10.0.0.2:50052", "10.0.0.3:50052"])
    ///     .load()?;
    /// # Ok::<(), llama::LoadError>(())
    /// ```
    pub fn rpc_servers<S: AsRef<str>>(mut self, endpoints: &[S]) -> Self {
        self.rpc_servers = endpoints.iter().map(|e| e.as_ref().to_string()).collect();
        self
    }

    /// Puts every tensor whose name matches `pattern` (a regular expression, ECMAScript syntax
    /// as llama.cpp's `--override-tensor`, searched anywhere in the name) in `place`. The first
    /// matching pattern wins. The classic use: a mixture-of-experts model on a GPU whose
    /// expert weights stay in host memory.
    ///
    /// ```no_run
    /// let model = llama::Model::builder("moe.gguf")
    ///     .gpu_layers(99)
    ///     .override_tensor(r"\.ffn_(up|down|gate)_exps\.", llama::BufferType::cpu())
    ///     .load()?;
    /// # Ok::<(), llama::LoadError>(())
    /// ```
    ///
    /// A pattern that does not compile is [`LoadError::BadPattern`] at load time.
    pub fn override_tensor(mut self, pattern: impl Into<String>, place: impl Into<Placement>) -> Self {
        self.tensor_overrides.push((pattern.into(), place.into()));
        self
    }

    /// When tensor data is read from the file (default [`LazyMode::Auto`]).
    pub fn lazy(mut self, mode: LazyMode) -> Self {
        self.params.lazy_mode = match mode {
            LazyMode::Off => llama_sys::LLAMA_LAZY_MODE_OFF,
            LazyMode::Auto => llama_sys::LLAMA_LAZY_MODE_AUTO,
            LazyMode::On => llama_sys::LLAMA_LAZY_MODE_ON,
        };
        self
    }

    /// Skip the GPU backends' pinned host buffers for weights kept on the CPU, so the CPU's own
    /// extra buffer types (repacking) can be used for them instead (default off).
    pub fn no_host(mut self, yes: bool) -> Self {
        self.params.no_host = yes;
        self
    }

    /// Load the multi-token-prediction layers of models that have them (default off).
    pub fn load_mtp(mut self, yes: bool) -> Self {
        self.params.load_mtp = yes;
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
    /// hyper-parameters and the vocabulary llama.cpp's loader asserts on, and the
    /// hyper-parameters the graph and ggml's CPU kernels assert on later (norm epsilons, RoPE
    /// dimensions and sections, head counts and sizes, expert counts, divisors; see the list in
    /// the crate's `model/gguf/graph.rs`), which would otherwise abort the first decode rather
    /// than the load. What no check foresees is contained by
    /// [`vet_model`](crate::vet_model). A malformed file is then
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
        let (chosen, lease) = self.choose_devices()?;
        let mut devices: Vec<llama_sys::ggml_backend_dev_t> = Vec::new();
        if let Some(list) = &chosen {
            devices.extend(list.iter().map(Device::raw));
            devices.push(std::ptr::null_mut());
            params.devices = devices.as_mut_ptr();
        }
        let (_patterns, overrides) = self.buffer_overrides()?;
        if !overrides.is_empty() {
            params.tensor_buft_overrides = overrides.as_ptr();
        }

        struct State<'a> {
            f: Progress<'a>,
            cancelled: bool,
            panicked: Option<String>,
        }
        unsafe extern "C" fn trampoline(progress: f32, data: *mut c_void) -> bool {
            // SAFETY: `data` is the `State` below, alive and exclusively ours for the whole load.
            let state = unsafe { &mut *data.cast::<State>() };
            match crate::barrier::catch_panic(|| (state.f)(progress)) {
                Ok(true) => true,
                Ok(false) => {
                    state.cancelled = true;
                    false
                }
                Err(message) => {
                    state.panicked = Some(message);
                    false
                }
            }
        }
        let mut state = self.progress.map(|f| State { f, cancelled: false, panicked: None });
        if let Some(state) = state.as_mut() {
            params.progress_callback = Some(trampoline);
            params.progress_callback_user_data = (state as *mut State).cast();
        }

        let load = || {
            // Every pointer in `params` (overrides ended by an empty key, tensor_split of
            // llama_max_devices() floats, devices ended by null, buffer overrides ended by a null
            // pattern with their NUL-terminated patterns, the callback state) points into locals
            // that outlive this synchronous call; every RPC server among the devices was found
            // reachable just before.
            // SAFETY: `c_path` is NUL-terminated and `params` is valid as described above.
            unsafe { llama_sys::llama_rs_model_load_from_file(c_path.as_ptr(), params) }
        };
        let (raw, mut reason) = capture_errors(load);
        if let Some(what) = crate::barrier::take_exception() {
            reason = if reason.is_empty() { what } else { format!("{reason}; {what}") };
        }
        let handle = NonNull::new(raw).map(|p| ModelHandle(p, lease));
        match state {
            Some(State { panicked: Some(message), .. }) => Err(LoadError::CallbackPanicked(message)),
            Some(State { cancelled: true, .. }) => Err(LoadError::Cancelled),
            _ => handle.map(|h| Model { handle: Arc::new(h) }).ok_or(LoadError::Rejected { path: self.path, reason }),
        }
    }
}

impl ModelBuilder<'_> {
    /// The device list for llama.cpp (None = its default choice) and the lease on the RPC
    /// servers among them, each checked reachable and of our protocol.
    fn choose_devices(&self) -> Result<(Option<Vec<Device>>, Lease), LoadError> {
        let mut remote = Vec::new();
        for endpoint in &self.rpc_servers {
            remote.extend_from_slice(rpc::connect(endpoint)?.devices());
        }
        let chosen = match (&self.devices, remote.is_empty()) {
            (None, true) => None,
            (Some(list), _) => Some(remote.iter().chain(list).copied().collect::<Vec<_>>()),
            // llama.cpp's own order with RPC servers: them, then this machine's discrete GPUs,
            // else its integrated ones.
            (None, false) => {
                let local = devices();
                let gpus: Vec<Device> = local.iter().copied().filter(|d| d.kind() == DeviceKind::Gpu).collect();
                let local = if gpus.is_empty() {
                    local.into_iter().filter(|d| d.kind() == DeviceKind::IntegratedGpu).collect()
                } else {
                    gpus
                };
                Some(remote.into_iter().chain(local).collect())
            }
        };
        let mut endpoints: Vec<String> = chosen.iter().flatten().filter_map(Device::endpoint).collect();
        endpoints.extend(self.tensor_overrides.iter().filter_map(|(_, p)| match p {
            Placement::Device(d) => d.endpoint(),
            Placement::Buffer(b) => b.device().and_then(|d| d.endpoint()),
        }));
        endpoints.sort();
        endpoints.dedup();
        for endpoint in &endpoints {
            // Servers of `rpc_servers` were probed by `connect` a moment ago; this covers the
            // devices and buffer types passed in from an earlier `connect`.
            if !self.rpc_servers.iter().any(|e| e == endpoint) {
                rpc::ensure_reachable(endpoint)?;
            }
        }
        Ok((chosen, Lease::new(endpoints)))
    }

    /// llama.cpp's tensor → buffer type array (ended by a null pattern) and the patterns it
    /// points into. Each pattern is compiled first by the same regex engine llama.cpp uses,
    /// which would otherwise throw in the middle of the load.
    #[allow(clippy::type_complexity)]
    fn buffer_overrides(&self) -> Result<(Vec<CString>, Vec<llama_sys::llama_model_tensor_buft_override>), LoadError> {
        if self.tensor_overrides.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        // SAFETY: a pure query of a compile-time limit.
        if self.tensor_overrides.len() >= unsafe { llama_sys::llama_max_tensor_buft_overrides() } {
            return Err(LoadError::InvalidParam("more tensor overrides than llama_max_tensor_buft_overrides()"));
        }
        let mut patterns = Vec::with_capacity(self.tensor_overrides.len());
        let mut out = Vec::with_capacity(self.tensor_overrides.len() + 1);
        for (pattern, place) in &self.tensor_overrides {
            let bad = |reason: String| LoadError::BadPattern { pattern: pattern.clone(), reason };
            let c = CString::new(pattern.as_str()).map_err(|_| bad("contains a NUL byte".into()))?;
            // SAFETY: a NUL-terminated pattern; the shim catches what std::regex throws.
            let compiled = crate::barrier::guarded(|| unsafe { llama_sys::llama_rs_regex_check(c.as_ptr()) });
            match compiled {
                Ok(1) => {}
                Ok(_) => return Err(bad("does not compile".into())),
                Err(what) => return Err(bad(what)),
            }
            let buft = match place {
                Placement::Buffer(b) => *b,
                Placement::Device(d) => d.buffer_type()?,
            };
            out.push(llama_sys::llama_model_tensor_buft_override { pattern: c.as_ptr(), buft: buft.raw() });
            // Moving the CString into the vector keeps its heap buffer, so the pointer holds.
            patterns.push(c);
        }
        out.push(llama_sys::llama_model_tensor_buft_override { pattern: std::ptr::null(), buft: std::ptr::null_mut() });
        Ok((patterns, out))
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
