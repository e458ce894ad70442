//! Hostile Jinja chat templates: rendering a conversation (and rendering it to tokens, which
//! renders twice and splits around the message contents) refuses or returns text. The input is
//! the template, optionally followed by a NUL and the user's message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llama::{ChatMessage, ChatTemplate};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (source, content) = text.split_once('\0').unwrap_or((&text, "What is 2+2?"));
    let template = ChatTemplate::new(source, "<|im_start|>", "<|im_end|>");
    let messages = [
        ChatMessage::system("Be brief."),
        ChatMessage::user(content),
        ChatMessage::assistant("4."),
        ChatMessage::user(content),
    ];
    let _ = template.render(&messages, true);
    let _ = template.render_tokens(&llama_fuzz::vocab_model().vocab(), &messages, true);
});
