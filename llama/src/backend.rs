//! Process-wide llama.cpp state: backend initialisation, NUMA, devices, backend registries,
//! buffer types and log routing.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Once;

use crate::rpc::RpcError;

static INIT: Once = Once::new();

/// Initialises the ggml backends and routes llama.cpp's logging to the `log` crate.
///
/// Runs once per process. The backends are never freed: llama.cpp requires them to outlive
/// every model, and a model handle may live until the process exits.
pub(crate) fn ensure_init() {
    INIT.call_once(|| {
        // SAFETY: `log_callback` is a plain function valid for the whole program and never
        // unwinds (it catches panics); a null user-data pointer is allowed.
        unsafe { llama_sys::llama_log_set(Some(log_callback), std::ptr::null_mut()) };
        // SAFETY: as above; mtmd keeps a logger of its own (projector loading reports its
        // failures only there).
        #[cfg(feature = "mtmd")]
        unsafe {
            llama_sys::mtmd_helper_log_set(Some(log_callback), std::ptr::null_mut())
        };
        #[cfg(feature = "dynamic-backends")]
        load_backend_modules();
        // SAFETY: called once per process (guarded by `INIT`), as llama.cpp asks.
        unsafe { llama_sys::llama_backend_init() };
    });
}

/// Environment variable naming the directory of the backend modules, for a `dynamic-backends`
/// build run where its build directory is not (an installed application).
pub const BACKEND_DIR_ENV: &str = "LLAMA_BACKEND_DIR";

/// Loads the backend modules (CPU variants, GPU backends, RPC) of a `dynamic-backends` build
/// from `$LLAMA_BACKEND_DIR`, else from the directory the build installed them in. Without this,
/// llama.cpp looks only next to the executable and in the working directory.
#[cfg(feature = "dynamic-backends")]
fn load_backend_modules() {
    let dir = std::env::var_os(BACKEND_DIR_ENV).map_or_else(|| llama_sys::BACKEND_DIR.into(), std::path::PathBuf::from);
    let Ok(c_dir) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        log::error!(target: "llama", "{BACKEND_DIR_ENV} contains a NUL byte; backend modules not loaded");
        return;
    };
    // SAFETY: a NUL-terminated path; ggml only reads it during the call.
    unsafe { llama_sys::ggml_backend_load_all_from_path(c_dir.as_ptr()) };
    // SAFETY: a pure query of the registry.
    if unsafe { llama_sys::ggml_backend_reg_count() } == 0 {
        log::error!(
            target: "llama",
            "no ggml backend module found in {} (set {BACKEND_DIR_ENV} to the directory holding libggml-cpu-*.so)",
            dir.display()
        );
    }
}

/// NUMA placement strategy for [`numa_init`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NumaStrategy {
    /// Spread threads over all nodes.
    Distribute,
    /// Keep threads on the node the process started on.
    Isolate,
    /// Follow the CPU map set by `numactl`.
    Numactl,
}

/// Optimises thread and memory placement on NUMA machines. Call once, before loading models.
///
/// ```
/// llama::numa_init(llama::NumaStrategy::Distribute);
/// ```
pub fn numa_init(strategy: NumaStrategy) {
    ensure_init();
    let raw = match strategy {
        NumaStrategy::Distribute => llama_sys::GGML_NUMA_STRATEGY_DISTRIBUTE,
        NumaStrategy::Isolate => llama_sys::GGML_NUMA_STRATEGY_ISOLATE,
        NumaStrategy::Numactl => llama_sys::GGML_NUMA_STRATEGY_NUMACTL,
    };
    static NUMA: Once = Once::new();
    // SAFETY: the backend is initialised; ggml only accepts the first call, enforced by `Once`.
    NUMA.call_once(|| unsafe { llama_sys::llama_numa_init(raw) });
}

/// Kind of compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceKind {
    /// The CPU backend.
    Cpu,
    /// A discrete or dedicated GPU.
    Gpu,
    /// An integrated GPU sharing host memory.
    IntegratedGpu,
    /// An accelerator used alongside the CPU (e.g. BLAS).
    Accelerator,
    /// Something newer than this crate knows.
    Other,
}

/// A compute device registered with ggml (CPU, CUDA GPU, Metal, RPC server, ...).
///
/// ```
/// for dev in llama::devices() {
///     let (free, total) = dev.memory();
///     println!("{}: {} ({free}/{total} bytes free)", dev.name(), dev.description());
/// }
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Device(llama_sys::ggml_backend_dev_t);

// SAFETY: devices are entries of ggml's global registry, created once and never freed while
// the process runs; their getters are read-only queries, safe from any thread.
unsafe impl Send for Device {}
// SAFETY: as above.
unsafe impl Sync for Device {}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("name", &self.name()).field("kind", &self.kind()).finish()
    }
}

/// Every compute device available to llama.cpp, in registry order.
pub fn devices() -> Vec<Device> {
    ensure_init();
    // SAFETY: the registry is initialised; indices below the count are valid.
    let n = unsafe { llama_sys::ggml_backend_dev_count() };
    (0..n)
        // SAFETY: `i < n`.
        .map(|i| unsafe { llama_sys::ggml_backend_dev_get(i) })
        .filter(|d| !d.is_null())
        .map(Device)
        .collect()
}

impl Device {
    pub(crate) fn raw(&self) -> llama_sys::ggml_backend_dev_t {
        self.0
    }

    /// Short name, e.g. `CPU` or `CUDA0`.
    pub fn name(&self) -> String {
        // SAFETY: registry devices live for the whole program; the name is a static string.
        unsafe { cstr_or_empty(llama_sys::ggml_backend_dev_name(self.0)) }
    }

    /// Human-readable description (e.g. the CPU or GPU model).
    pub fn description(&self) -> String {
        // SAFETY: as in `name`.
        unsafe { cstr_or_empty(llama_sys::ggml_backend_dev_description(self.0)) }
    }

    /// `(free, total)` memory in bytes; `(0, 0)` for a device on an RPC server that cannot be
    /// reached (see [`try_memory`](Self::try_memory)).
    pub fn memory(&self) -> (usize, usize) {
        self.try_memory().unwrap_or((0, 0))
    }

    /// Name of the backend registry the device belongs to: `CPU`, `CUDA`, `Vulkan`, `RPC`...
    pub fn backend_name(&self) -> String {
        // SAFETY: valid device; its registry and the registry's name are static.
        unsafe { cstr_or_empty(llama_sys::ggml_backend_reg_name(llama_sys::ggml_backend_dev_backend_reg(self.0))) }
    }

    /// Whether the device is on an RPC server (see [`rpc`](crate::rpc)).
    pub fn is_remote(&self) -> bool {
        self.backend_name() == "RPC"
    }

    /// The `HOST:PORT` of the RPC server a remote device lives on.
    pub fn endpoint(&self) -> Option<String> {
        // ggml-rpc describes each of its devices by the endpoint it was registered with.
        self.is_remote().then(|| self.description())
    }

    /// Before a call that makes ggml talk to the device's RPC server: whether that server can be
    /// reached, since ggml aborts the process when it cannot.
    fn check_remote(&self) -> Result<(), RpcError> {
        match self.endpoint() {
            Some(endpoint) => crate::rpc::ensure_reachable(&endpoint),
            None => Ok(()),
        }
    }

    /// `(free, total)` memory in bytes, or an error when the device is on an RPC server that
    /// cannot be reached (where [`memory`](Self::memory) answers zeros).
    pub fn try_memory(&self) -> Result<(usize, usize), RpcError> {
        self.check_remote()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: valid device; both out-pointers are writable; a remote device's server was
        // just found reachable.
        unsafe { llama_sys::ggml_backend_dev_memory(self.0, &mut free, &mut total) };
        Ok((free, total))
    }

    /// What the device supports. For a device on an unreachable RPC server, all `false`.
    pub fn caps(&self) -> DeviceCaps {
        self.props()
            .map(|p| DeviceCaps {
                async_compute: p.caps.async_,
                host_buffer: p.caps.host_buffer,
                buffer_from_host_ptr: p.caps.buffer_from_host_ptr,
                events: p.caps.events,
                mmap: p.caps.mmap_support,
            })
            .unwrap_or_default()
    }

    /// The device's bus id (e.g. a PCI address `0000:c1:00.0`), when the backend reports one.
    pub fn id(&self) -> Option<String> {
        let props = self.props().ok()?;
        // SAFETY: the id is null or a string owned by the device, which lives for the program.
        (!props.device_id.is_null()).then(|| unsafe { cstr_or_empty(props.device_id) })
    }

    fn props(&self) -> Result<llama_sys::ggml_backend_dev_props, RpcError> {
        self.check_remote()?;
        let mut props = llama_sys::ggml_backend_dev_props::default();
        // SAFETY: valid device, writable struct; a remote device's server is reachable (props
        // include its memory, fetched over the network).
        unsafe { llama_sys::ggml_backend_dev_get_props(self.0, &mut props) };
        Ok(props)
    }

    /// The buffer type that places tensors in this device's memory (e.g. for
    /// [`ModelBuilder::override_tensor`](crate::ModelBuilder::override_tensor)).
    pub fn buffer_type(&self) -> Result<BufferType, RpcError> {
        self.check_remote()?;
        // SAFETY: valid device; a remote device's server is reachable (its first buffer type
        // query asks the server for alignment and size limits).
        let raw = unsafe { llama_sys::ggml_backend_dev_buffer_type(self.0) };
        BufferType::from_raw(raw).ok_or(RpcError::NoBufferType(self.name()))
    }

    /// Pinned host memory that transfers to this device quickly, if the backend has it.
    pub fn host_buffer_type(&self) -> Option<BufferType> {
        // SAFETY: valid device; ggml returns null when the backend has no host buffer type, and
        // the RPC backend has none (so no network is involved).
        BufferType::from_raw(unsafe { llama_sys::ggml_backend_dev_host_buffer_type(self.0) })
    }

    /// The extra buffer types the backend offers for weights on this device, e.g. the CPU's
    /// repacked layouts (`CPU_REPACK`), which llama.cpp uses when repacking is on.
    pub fn extra_buffer_types(&self) -> Vec<BufferType> {
        const NAME: &CStr = c"ggml_backend_dev_get_extra_bufts";
        // SAFETY: valid device; the registry is static; the name is NUL-terminated.
        let proc = unsafe {
            llama_sys::ggml_backend_reg_get_proc_address(llama_sys::ggml_backend_dev_backend_reg(self.0), NAME.as_ptr())
        };
        if proc.is_null() {
            return Vec::new();
        }
        // SAFETY: a non-null address registered under this name has the signature
        // `ggml_backend_dev_get_extra_bufts_t` (ggml-backend.h).
        let get: unsafe extern "C" fn(llama_sys::ggml_backend_dev_t) -> *mut llama_sys::ggml_backend_buffer_type_t =
            unsafe { std::mem::transmute(proc) };
        // SAFETY: valid device; the result is null or a null-terminated static array.
        let mut p = unsafe { get(self.0) };
        let mut out = Vec::new();
        // SAFETY: walks the array up to its null terminator.
        while let Some(buft) = (!p.is_null()).then(|| unsafe { *p }).and_then(BufferType::from_raw) {
            out.push(buft);
            // SAFETY: the element just read was not the terminator, so the next one exists.
            p = unsafe { p.add(1) };
        }
        out
    }

    /// What kind of device this is.
    pub fn kind(&self) -> DeviceKind {
        use llama_sys::*;
        // SAFETY: valid device.
        match unsafe { ggml_backend_dev_type(self.0) } {
            GGML_BACKEND_DEVICE_TYPE_CPU => DeviceKind::Cpu,
            GGML_BACKEND_DEVICE_TYPE_GPU => DeviceKind::Gpu,
            GGML_BACKEND_DEVICE_TYPE_IGPU => DeviceKind::IntegratedGpu,
            GGML_BACKEND_DEVICE_TYPE_ACCEL => DeviceKind::Accelerator,
            _ => DeviceKind::Other,
        }
    }
}

/// What a device supports (ggml's `ggml_backend_dev_caps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DeviceCaps {
    /// Asynchronous operations.
    pub async_compute: bool,
    /// A pinned host buffer type ([`Device::host_buffer_type`]).
    pub host_buffer: bool,
    /// Buffers made from host memory without a copy.
    pub buffer_from_host_ptr: bool,
    /// Event synchronisation.
    pub events: bool,
    /// Weights can be loaded from a memory-mapped file.
    pub mmap: bool,
}

/// A backend registry: one per backend built in or loaded (CPU, CUDA, Vulkan, RPC...), holding
/// its devices.
///
/// ```
/// for backend in llama::backends() {
///     println!("{}: {} device(s)", backend.name(), backend.devices().len());
/// }
/// ```
#[derive(Clone, Copy)]
pub struct Backend(llama_sys::ggml_backend_reg_t);

// SAFETY: registries are static objects of ggml (or of a backend module that is never unloaded
// here), created once and never freed while the process runs; their getters only read.
unsafe impl Send for Backend {}
// SAFETY: as above.
unsafe impl Sync for Backend {}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("name", &self.name()).finish()
    }
}

impl Backend {
    /// The registry's name, e.g. `CPU`, `CUDA`, `RPC`.
    pub fn name(&self) -> String {
        // SAFETY: a valid registry; its name is a static string.
        unsafe { cstr_or_empty(llama_sys::ggml_backend_reg_name(self.0)) }
    }

    /// The registry's devices. Servers added through [`rpc::connect`](crate::rpc::connect) are
    /// not listed under `RPC` here: each is a registry of its own, returned by that call.
    pub fn devices(&self) -> Vec<Device> {
        // SAFETY: a valid registry; the count bounds the indices asked for below (the RPC
        // registry's count is 0, so its aborting getter is never reached).
        let n = unsafe { llama_sys::ggml_backend_reg_dev_count(self.0) };
        (0..n)
            // SAFETY: `i < n`.
            .map(|i| unsafe { llama_sys::ggml_backend_reg_dev_get(self.0, i) })
            .filter(|d| !d.is_null())
            .map(Device)
            .collect()
    }

    pub(crate) fn from_raw(reg: llama_sys::ggml_backend_reg_t) -> Backend {
        Backend(reg)
    }

    pub(crate) fn by_name(name: &CStr) -> Option<Backend> {
        ensure_init();
        // SAFETY: the registry is initialised; the name is NUL-terminated.
        let reg = unsafe { llama_sys::ggml_backend_reg_by_name(name.as_ptr()) };
        (!reg.is_null()).then_some(Backend(reg))
    }

    /// The function the registry exports under `name`, or null.
    pub(crate) fn proc_address(&self, name: &CStr) -> *mut c_void {
        // SAFETY: a valid registry; the name is NUL-terminated.
        unsafe { llama_sys::ggml_backend_reg_get_proc_address(self.0, name.as_ptr()) }
    }
}

/// Every backend registry, in registration order.
pub fn backends() -> Vec<Backend> {
    ensure_init();
    // SAFETY: the registry is initialised; indices below the count are valid.
    let n = unsafe { llama_sys::ggml_backend_reg_count() };
    (0..n)
        // SAFETY: `i < n`.
        .map(|i| unsafe { llama_sys::ggml_backend_reg_get(i) })
        .filter(|r| !r.is_null())
        .map(Backend)
        .collect()
}

/// A kind of memory tensors can be placed in: a device's own memory, pinned host memory, the
/// CPU's repacked weight layouts...
///
/// ```
/// let cpu = llama::BufferType::cpu();
/// assert_eq!(cpu.name(), "CPU");
/// assert!(cpu.is_host());
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BufferType(llama_sys::ggml_backend_buffer_type_t);

// SAFETY: buffer types are static objects of their backend, never freed while the process runs
// (ggml-rpc says so of its own: "allocated and never freed; this is by design"); the getters
// used here only read fields set at creation.
unsafe impl Send for BufferType {}
// SAFETY: as above.
unsafe impl Sync for BufferType {}

impl std::fmt::Debug for BufferType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferType").field("name", &self.name()).finish()
    }
}

impl BufferType {
    /// Plain host memory of the CPU backend.
    pub fn cpu() -> BufferType {
        ensure_init();
        // SAFETY: returns a static buffer type, never null.
        BufferType(unsafe { llama_sys::ggml_backend_cpu_buffer_type() })
    }

    fn from_raw(raw: llama_sys::ggml_backend_buffer_type_t) -> Option<BufferType> {
        (!raw.is_null()).then_some(BufferType(raw))
    }

    pub(crate) fn raw(&self) -> llama_sys::ggml_backend_buffer_type_t {
        self.0
    }

    /// The name, e.g. `CPU`, `CPU_REPACK`, `CUDA0`, `RPC0[127.0.0.1:50052]`.
    pub fn name(&self) -> String {
        // SAFETY: a static buffer type; its name is a string it owns.
        unsafe { cstr_or_empty(llama_sys::ggml_backend_buft_name(self.0)) }
    }

    /// Alignment of allocations, in bytes.
    pub fn alignment(&self) -> usize {
        // SAFETY: a static buffer type (an RPC one answers from values cached at creation).
        unsafe { llama_sys::ggml_backend_buft_get_alignment(self.0) }
    }

    /// Largest single allocation, in bytes.
    pub fn max_size(&self) -> usize {
        // SAFETY: as in `alignment`.
        unsafe { llama_sys::ggml_backend_buft_get_max_size(self.0) }
    }

    /// Whether the memory is host memory the CPU can read directly.
    pub fn is_host(&self) -> bool {
        // SAFETY: a static buffer type.
        unsafe { llama_sys::ggml_backend_buft_is_host(self.0) }
    }

    /// The device the memory belongs to, if any.
    pub fn device(&self) -> Option<Device> {
        // SAFETY: a static buffer type; the device, if any, is a registry device.
        let dev = unsafe { llama_sys::ggml_backend_buft_get_device(self.0) };
        (!dev.is_null()).then_some(Device(dev))
    }
}

/// Observer of log lines (see [`with_log_hook`]): `(is_error, text)`.
pub(crate) type LogHook = Box<dyn FnMut(bool, &str)>;

thread_local! {
    /// A per-thread observer of log lines, used to turn quantization logs into progress.
    static LOG_HOOK: RefCell<Option<LogHook>> = const { RefCell::new(None) };
}

/// Runs `f` with `hook` seeing every llama.cpp log line emitted on this thread (an outer hook
/// is suspended meanwhile and restored afterwards).
pub(crate) fn with_log_hook<R>(hook: LogHook, f: impl FnOnce() -> R) -> R {
    let outer = LOG_HOOK.with(|h| h.borrow_mut().replace(hook));
    struct Restore(Option<LogHook>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            LOG_HOOK.with(|h| *h.borrow_mut() = outer);
        }
    }
    let _restore = Restore(outer);
    f()
}

/// Runs `f` and returns what it returned plus the error lines llama.cpp logged meanwhile on
/// this thread (llama.cpp reports most failures only through its log).
pub(crate) fn capture_errors<R>(f: impl FnOnce() -> R) -> (R, String) {
    capture_errors_and(|_| {}, f)
}

/// [`capture_errors`], also passing every line to `also`.
pub(crate) fn capture_errors_and<R>(mut also: impl FnMut(&str) + 'static, f: impl FnOnce() -> R) -> (R, String) {
    let errors = std::rc::Rc::new(RefCell::new(Vec::<String>::new()));
    let sink = errors.clone();
    let r = with_log_hook(
        Box::new(move |is_error, line| {
            also(line);
            let line = line.trim();
            if is_error && !line.is_empty() {
                sink.borrow_mut().push(line.to_string());
            }
        }),
        f,
    );
    let joined = errors.borrow().join("; ");
    (r, joined)
}

/// Receives llama.cpp and ggml log lines. Quiet unless the application installs a `log`
/// logger; lines go to target `llama_cpp`.
unsafe extern "C" fn log_callback(level: llama_sys::ggml_log_level, text: *const c_char, _: *mut c_void) {
    // A panic must not unwind into C; a lost log line is the lesser evil.
    let _ = std::panic::catch_unwind(|| {
        if text.is_null() {
            return;
        }
        // SAFETY: llama.cpp passes a NUL-terminated string valid for the duration of the call.
        let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
        let is_error = level == llama_sys::GGML_LOG_LEVEL_ERROR;
        let _ = LOG_HOOK.try_with(|h| {
            if let Ok(mut hook) = h.try_borrow_mut() {
                if let Some(hook) = hook.as_mut() {
                    hook(is_error, &text);
                }
            }
        });
        let level = match level {
            llama_sys::GGML_LOG_LEVEL_ERROR => log::Level::Error,
            llama_sys::GGML_LOG_LEVEL_WARN => log::Level::Warn,
            llama_sys::GGML_LOG_LEVEL_INFO => log::Level::Info,
            _ => log::Level::Debug,
        };
        let text = text.trim_end();
        if !text.is_empty() && log::log_enabled!(target: "llama_cpp", level) {
            log::log!(target: "llama_cpp", level, "{text}");
        }
    });
}

/// The llama.cpp version string of the linked library.
///
/// ```
/// assert!(!llama::version().is_empty());
/// ```
pub fn version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    unsafe { cstr_or_empty(llama_sys::llama_version()) }
}

/// The CPU features and backends llama.cpp was built with (e.g. `AVX2 = 1`).
///
/// ```
/// println!("{}", llama::system_info());
/// ```
pub fn system_info() -> String {
    ensure_init();
    // SAFETY: returns a pointer to a static NUL-terminated buffer.
    unsafe { cstr_or_empty(llama_sys::llama_print_system_info()) }
}

/// Whether this build can offload layers: a GPU backend is present, or the RPC backend (llama.cpp
/// counts remote servers as offload targets, so an `rpc` build answers `true` on a CPU-only
/// machine; look for [`DeviceKind::Gpu`] in [`devices`] to know about local GPUs).
pub fn supports_gpu_offload() -> bool {
    ensure_init();
    // SAFETY: a pure query.
    unsafe { llama_sys::llama_supports_gpu_offload() }
}

/// Copies a C string owned by llama.cpp into Rust.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string valid for the duration of the call.
pub(crate) unsafe fn cstr_or_empty(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: non-null and NUL-terminated per this function's contract.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}
