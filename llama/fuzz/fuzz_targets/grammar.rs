//! Arbitrary GBNF through `Sampler::grammar` on the real vocabulary; a grammar that parses is
//! then driven for a few tokens over the first 256 ids (mostly single characters).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_fuzz::targets::grammar(data));
