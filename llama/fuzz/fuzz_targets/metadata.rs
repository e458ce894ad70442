//! A real model with its metadata and tensor infos edited semantically, written again with the
//! same tensor data, then loaded and decoded: the values that pass loading must not abort the
//! first decode either.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_fuzz::targets::metadata(data));
