// Shared by `build.rs` (feature `bindgen`) and `tests/bindings.rs`, so the checked-in bindings and
// the freshness check are produced by exactly the same configuration.

use std::path::Path;

/// Headers bound: `llama.h`, the ggml headers needed for devices, backends, CPU threads and
/// RPC, and the multimodal library's (`mtmd`). Everything they declare is kept; nothing from the
/// system headers is.
pub const HEADERS: &[&str] = &[
    "include/llama.h",
    "ggml/include/ggml.h",
    "ggml/include/ggml-backend.h",
    "ggml/include/ggml-cpu.h",
    "ggml/include/ggml-alloc.h",
    "ggml/include/ggml-opt.h",
    "ggml/include/ggml-rpc.h",
    "ggml/include/gguf.h",
    // Declared whatever the features; linked only with `mtmd`.
    "tools/mtmd/mtmd.h",
    "tools/mtmd/mtmd-helper.h",
];

pub fn builder(src: &Path) -> bindgen::Builder {
    let mut b = bindgen::Builder::default()
        .clang_arg(format!("-I{}", src.join("include").display()))
        .clang_arg(format!("-I{}", src.join("ggml/include").display()))
        .clang_arg(format!("-I{}", src.join("tools/mtmd").display()))
        // prettyplease, not rustfmt: output must not depend on which rustfmt.toml is in scope.
        .formatter(bindgen::Formatter::Prettyplease)
        .use_core()
        .layout_tests(false)
        .derive_default(true)
        .derive_debug(true)
        .prepend_enum_name(false)
        .generate_comments(true)
        .merge_extern_blocks(true)
        .sort_semantically(true);
    // One wrapper that includes by name, so each header is seen once through the -I paths.
    let wrapper: String = HEADERS.iter().map(|h| format!("#include \"{}\"\n", file_name(h))).collect();
    b = b.header_contents("llama-sys-wrapper.h", &wrapper);
    for h in HEADERS {
        b = b.allowlist_file(format!(".*/{}", file_name(h)));
    }
    b
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
