//! The checked-in bindings must match what bindgen produces from the headers being built.
//! Needs libclang at run time; without it the test says why and returns, except under CI (`CI`
//! set), where a skip is a failure.
//! `LLAMA_SYS_BLESS=1` rewrites `src/bindings.rs` instead of comparing.

#[path = "../bindgen_config.rs"]
mod bindgen_config;

use std::path::Path;

#[test]
fn checked_in_bindings_match_headers() {
    if let Err(e) = clang_sys::load() {
        assert!(std::env::var_os("CI").is_none(), "libclang not found under CI ({e}): .ci/setup must install it");
        eprintln!("SKIPPED: libclang not found ({e}); install libclang-dev to run this check");
        return;
    }
    let generated = bindgen_config::builder(Path::new(llama_sys::SOURCE_DIR))
        .generate()
        .expect("bindgen failed on the pinned headers")
        .to_string();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bindings.rs");
    if std::env::var_os("LLAMA_SYS_BLESS").is_some() {
        std::fs::write(&file, &generated).expect("write src/bindings.rs");
        return;
    }
    let checked_in = std::fs::read_to_string(&file).expect("read src/bindings.rs");
    assert!(
        checked_in == generated,
        "src/bindings.rs is stale for {}; regenerate with LLAMA_SYS_BLESS=1 cargo test -p llama-sys --test bindings",
        llama_sys::SOURCE_DIR
    );
}
