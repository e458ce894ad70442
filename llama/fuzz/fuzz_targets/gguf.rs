//! Arbitrary bytes as a model file: the Rust GGUF validation, then llama.cpp's loader for what
//! passes it (vocabulary only, then everything), then a context and one decoded token for what
//! loads. Any of these may refuse; none may crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_fuzz::targets::gguf(data));
