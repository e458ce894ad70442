//! Arbitrary bytes as saved context state, whole and per sequence: refused, or loaded into a
//! cache that the next decode can use.
#![no_main]

// The model loads before the first input, so no input is charged for it (libFuzzer's timeout).
libfuzzer_sys::fuzz_target!(init: { llama_fuzz::full_model(); }, |data: &[u8]| llama_fuzz::targets::state(data));
