//! Arbitrary text through the default model's tokenizer: ids stay in the vocabulary, plain text
//! round-trips, and arbitrary ids detokenize or are refused. The first byte picks the flags.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llama::{Token, Utf8Decoder};

/// Whether the vocabulary has a token for the lone byte `b`.
fn byte_has_token(b: u8) -> bool {
    static TABLE: std::sync::OnceLock<[bool; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let vocab = llama_fuzz::vocab_model().vocab();
        let mut table = [false; 256];
        for id in 0..vocab.n_tokens() {
            if let Ok([b]) = vocab.token_to_bytes(Token(id), false).as_deref() {
                table[*b as usize] = true;
            }
        }
        table
    })[b as usize]
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let vocab = llama_fuzz::vocab_model().vocab();
    let text = String::from_utf8_lossy(rest);
    let (add_special, parse_special) = (flags & 1 != 0, flags & 2 != 0);
    let tokens = vocab.tokenize_with(&text, add_special, parse_special).expect("valid text tokenizes");
    assert!(tokens.iter().all(|&t| vocab.check(t).is_ok()), "an id outside the vocabulary");
    if !add_special && !parse_special {
        // Bytes the vocabulary has no token for are dropped (see `Vocab::tokenize`).
        let kept: Vec<u8> = text.bytes().filter(|&b| byte_has_token(b)).collect();
        let kept = String::from_utf8_lossy(&kept);
        assert_eq!(vocab.detokenize(&tokens).expect("own ids detokenize"), kept, "round trip");
    }
    let mut decoder = Utf8Decoder::default();
    for &t in tokens.iter().take(64) {
        let _ = decoder.push(&vocab.token_to_bytes(t, flags & 4 != 0).expect("own ids render"));
    }
    let _ = decoder.finish();

    let ids: Vec<Token> = rest.chunks_exact(4).map(|c| Token(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect();
    let _ = vocab.detokenize(&ids);
    for &t in ids.iter().take(16) {
        let _ = vocab.token_to_bytes(t, true);
        let _ = vocab.text(t);
        let _ = (vocab.is_eog(t), vocab.is_control(t));
    }
});
