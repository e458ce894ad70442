//! Images, audio files and raw pixels through a projector's decoders, tokenizer and encoder:
//! stb_image and miniaudio are C parsers of hostile bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_fuzz::targets::media(data));
