//! Arbitrary GBNF through `Sampler::grammar` on the real vocabulary; a grammar that parses is
//! then driven for a few tokens over the first 256 ids (mostly single characters).
#![no_main]

// The model loads before the first input, so no input is charged for it (libFuzzer's timeout).
libfuzzer_sys::fuzz_target!(init: { llama_fuzz::vocab_model(); }, |data: &[u8]| llama_fuzz::targets::grammar(data));
