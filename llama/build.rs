//! With `cuda`: bakes the CUDA toolkit's runtime library directories (from llama-sys,
//! `DEP_LLAMA_CUDA_LIB_DIR`) into this crate's test binaries, so `cargo test` runs them without
//! `LD_LIBRARY_PATH` where the toolkit is not on the loader's path (NVIDIA's pip wheels). Programs
//! that depend on this crate set their own rpath or `LD_LIBRARY_PATH`.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_CUDA_LIB_DIR");
    if let Some(dirs) = env::var_os("DEP_LLAMA_CUDA_LIB_DIR") {
        for dir in env::split_paths(&dirs) {
            println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", dir.display());
        }
    }
}
