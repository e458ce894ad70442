//! Build script of the examples/benches package:
//! - compiles the C reference loops (`benches/c_reference/greedy.c`, `speculative.c`, and with
//!   `mtmd` `media.c`) against the same llama.cpp headers and build that `llama-sys` links, for
//!   the equivalence tests and the benchmarks;
//! - with llama-sys's `shared` feature, bakes the directory of the llama.cpp shared libraries
//!   into the binaries' rpath so they run directly, not only through `cargo run`;
//! - with `cuda`, the same for the CUDA toolkit's runtime libraries (libcudart, libcublas), which
//!   are rarely on the loader's path and never when they come from NVIDIA's pip wheels.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=benches/c_reference/greedy.c");
    println!("cargo:rerun-if-changed=benches/c_reference/speculative.c");
    println!("cargo:rerun-if-changed=benches/c_reference/media.c");
    let include = env::var("DEP_LLAMA_INCLUDE").expect("llama-sys exports its include dir");
    let ggml_include = env::var("DEP_LLAMA_GGML_INCLUDE").expect("llama-sys exports the ggml include dir");
    cc::Build::new()
        .file("benches/c_reference/greedy.c")
        .file("benches/c_reference/speculative.c")
        .include(&include)
        .include(&ggml_include)
        .opt_level(2)
        .warnings(true)
        .compile("llama_rs_c_reference");
    if env::var_os("CARGO_FEATURE_MTMD").is_some() {
        let mtmd_include = env::var("DEP_LLAMA_MTMD_INCLUDE").expect("llama-sys exports the mtmd include dir");
        cc::Build::new()
            .file("benches/c_reference/media.c")
            .include(&include)
            .include(&ggml_include)
            .include(mtmd_include)
            .opt_level(2)
            .warnings(true)
            .compile("llama_rs_c_media");
    }

    let shared = env::var("DEP_LLAMA_SHARED").is_ok_and(|v| v == "1");
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if let (true, Ok(dir)) = (shared, env::var("DEP_LLAMA_LIB_DIR")) {
        if target_os != "windows" {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
    if let Some(dirs) = env::var_os("DEP_LLAMA_CUDA_LIB_DIR") {
        for dir in env::split_paths(&dirs) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
        }
    }
}
