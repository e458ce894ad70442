//! Arbitrary text through the default model's tokenizer: ids stay in the vocabulary, plain text
//! round-trips, and arbitrary ids detokenize or are refused. The first byte picks the flags.
#![no_main]

// The model loads before the first input, so no input is charged for it (libFuzzer's timeout).
libfuzzer_sys::fuzz_target!(init: { llama_fuzz::vocab_model(); }, |data: &[u8]| llama_fuzz::targets::tokenize(data));
