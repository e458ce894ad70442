//! Arbitrary text through the default model's tokenizer: ids stay in the vocabulary, plain text
//! round-trips, and arbitrary ids detokenize or are refused. The first byte picks the flags.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_fuzz::targets::tokenize(data));
