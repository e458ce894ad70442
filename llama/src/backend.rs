//! Process-wide llama.cpp state: backend initialisation and log routing.

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

/// Receives llama.cpp and ggml log lines. Quiet unless the application installs a `log`
/// logger; lines go to target `llama_cpp`.
unsafe extern "C" fn log_callback(level: llama_sys::ggml_log_level, text: *const c_char, _: *mut c_void) {
    // A panic must not unwind into C; a lost log line is the lesser evil.
    let _ = std::panic::catch_unwind(|| {
        if text.is_null() {
            return;
        }
        let level = match level {
            llama_sys::GGML_LOG_LEVEL_ERROR => log::Level::Error,
            llama_sys::GGML_LOG_LEVEL_WARN => log::Level::Warn,
            llama_sys::GGML_LOG_LEVEL_INFO => log::Level::Info,
            _ => log::Level::Debug,
        };
        if !log::log_enabled!(target: "llama_cpp", level) {
            return;
        }
        // SAFETY: llama.cpp passes a NUL-terminated string valid for the duration of the call.
        let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
        let text = text.trim_end();
        if !text.is_empty() {
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
