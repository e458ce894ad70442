//! The server example's request bodies: the first byte picks chat, completions or embeddings;
//! the rest is the body its handler checks (and, for tools, renders) before the engine.
#![no_main]

// The model loads before the first input, so no input is charged for it (libFuzzer's timeout).
libfuzzer_sys::fuzz_target!(init: { llama_fuzz::vocab_model(); }, |data: &[u8]| {
    llama_fuzz::server::request(llama_fuzz::vocab_model(), data);
});
