//! Build script of the examples/benches package: with llama-sys's `shared` feature, bake the
//! directory of the llama.cpp shared libraries into the binaries' rpath so they run directly
//! (`./target/release/examples/generate`), not only through `cargo run`.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_SHARED");
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_LIB_DIR");
    let shared = std::env::var("DEP_LLAMA_SHARED").is_ok_and(|v| v == "1");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if let (true, Ok(dir)) = (shared, std::env::var("DEP_LLAMA_LIB_DIR")) {
        if target_os != "windows" {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
