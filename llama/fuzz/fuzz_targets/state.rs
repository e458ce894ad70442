//! Arbitrary bytes as saved context state, whole and per sequence: refused, or loaded into a
//! cache that the next decode can use.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_fuzz::targets::state(data));
