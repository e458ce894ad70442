//! Process-wide llama.cpp state: backend initialisation, NUMA, devices and log routing.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Once;

static INIT: Once = Once::new();

/// Initialises the ggml backends and routes llama.cpp's logging to the `log` crate.
///
/// Runs once per process. The backends are never freed: llama.cpp requires them to outlive
/// every model, and a model handle may live until the process exits.
pub(crate) fn ensure_init() {
    INIT.call_once(|| {
        // SAFETY: `log_callback` is a plain function valid for the whole program and never
        // unwinds (it catches panics); a null user-data pointer is allowed.
        unsafe {
            llama_sys::llama_log_set(Some(log_callback), std::ptr::null_mut());
            llama_sys::llama_backend_init();
        }
    });
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
#[derive(Clone, Copy)]
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

    /// `(free, total)` memory in bytes.
    pub fn memory(&self) -> (usize, usize) {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: valid device; both out-pointers are writable.
        unsafe { llama_sys::ggml_backend_dev_memory(self.0, &mut free, &mut total) };
        (free, total)
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

/// Whether this build can offload to a GPU.
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
