//! Hostile Jinja chat templates: rendering a conversation (and rendering it to tokens, which
//! renders twice and splits around the message contents) refuses or returns text. The input is
//! the template, optionally followed by a NUL and the user's message.
#![no_main]

// The model loads before the first input, so no input is charged for it (libFuzzer's timeout).
libfuzzer_sys::fuzz_target!(init: { llama_fuzz::vocab_model(); }, |data: &[u8]| llama_fuzz::targets::chat_template(data));
