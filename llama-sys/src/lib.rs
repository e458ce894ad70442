//! Raw FFI bindings to llama.cpp (`llama.h`) and the parts of ggml needed for backends, devices,
//! CPU threads and RPC.
//!
//! The C library is built from a pinned llama.cpp tree by this crate's build script (see the
//! repository README for features and environment variables). Everything here is `unsafe` and
//! mirrors the C declarations one for one; the `llama` crate is the safe API.
//!
//! The bindings are generated ahead of time for the pinned headers and checked in
//! (`src/bindings.rs`), so no libclang is needed to build. The `bindgen` feature regenerates them
//! at build time; `LLAMA_SYS_BLESS=1 cargo test -p llama-sys --test bindings` rewrites the
//! checked-in file.

#![no_std]
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]
#![allow(clippy::all, rustdoc::all)]
#![deny(clippy::undocumented_unsafe_blocks)]

// Generated code: its layout-test unsafe blocks carry no SAFETY comments.
#[allow(clippy::undocumented_unsafe_blocks)]
mod bindings {
    #[cfg(feature = "bindgen")]
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

    #[cfg(not(feature = "bindgen"))]
    include!("bindings.rs");
}
pub use bindings::*;

mod shim;
pub use shim::*;

/// Root of the llama.cpp source tree this crate was built from.
pub const SOURCE_DIR: &str = env!("LLAMA_CPP_SRC_DIR");

/// Where the build installed the backend modules (`dynamic-backends` builds only): pass it to
/// `ggml_backend_load_all_from_path`.
#[cfg(feature = "dynamic-backends")]
pub const BACKEND_DIR: &str = env!("LLAMA_SYS_BACKEND_DIR");
