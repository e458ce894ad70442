//! Tokenization on both real models.

mod common;

use common::{both, gemma3, smollm2};
use llama::{AddSpecial, ControlText, Token, TokenAttrs, TokenizeError, Utf8Decoder, VocabType};

const TEXTS: &[&str] = &[
    "Hello, world!",
    "naïve café — crème brûlée",
    "日本語のテキストと中文文本",
    "Привет, мир! Γειά σου κόσμε",
    "emoji 🦀🚀👩‍👩‍👧 flags 🇫🇷",
    "  leading spaces, tabs\tand\nnewlines\r\n",
    "fn main() { println!(\"{}\", 1 + 2); }",
    "مرحبا بالعالم",
];

#[test]
fn round_trip_multilingual_text_on_both_models() {
    for model in both() {
        let vocab = model.vocab();
        for text in TEXTS {
            let tokens = vocab.tokenize(text, AddSpecial::No).unwrap();
            assert!(!tokens.is_empty());
            assert_eq!(&vocab.detokenize(&tokens).unwrap(), text, "{}", model.architecture());
        }
    }
}

/// Tiny deterministic generator so the test needs no extra crate.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn streaming_decoder_equals_detokenize_for_1000_random_sequences() {
    for model in both() {
        let vocab = model.vocab();
        let n = vocab.n_tokens() as u64;
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..1000 {
            let len = 1 + (rng.next() % 24) as usize;
            // Non-control tokens only: detokenize never renders those, pieces neither.
            let tokens: Vec<Token> = std::iter::repeat_with(|| Token((rng.next() % n) as i32))
                .filter(|&t| !vocab.is_control(t))
                .take(len)
                .collect();
            let mut dec = Utf8Decoder::default();
            let mut streamed = String::new();
            for &t in &tokens {
                streamed += &dec.push(&vocab.token_to_bytes(t, ControlText::Hide).unwrap());
            }
            streamed += &dec.finish();
            let whole = vocab.detokenize(&tokens).unwrap();
            assert_eq!(streamed, whole, "{} tokens {:?}", model.architecture(), tokens);
        }
    }
}

#[test]
fn special_tokens_and_attributes() {
    let s = smollm2().vocab();
    assert_eq!(s.vocab_type(), VocabType::Bpe);
    let eos = s.eos().unwrap();
    assert!(s.is_eog(eos));
    assert!(s.is_control(eos));
    assert!(s.attrs(eos).unwrap().contains(TokenAttrs::CONTROL));
    let hello = s.tokenize("Hello", AddSpecial::No).unwrap()[0];
    assert!(!s.is_control(hello) && !s.is_eog(hello));
    assert!(s.attrs(hello).unwrap().contains(TokenAttrs::NORMAL));
    assert_eq!(s.text(hello).unwrap(), "Hello");

    let g = gemma3().vocab();
    assert_eq!(g.vocab_type(), VocabType::Spm);
    let bos = g.bos().unwrap();
    assert!(g.adds_bos());
    assert_eq!(g.tokenize("hi", AddSpecial::Yes).unwrap()[0], bos);
    assert!(g.eot().is_some_and(|t| g.is_eog(t)));
    assert!(g.score(Token(1000)).unwrap().is_finite());
}

#[test]
fn invalid_ids_and_huge_text_are_errors() {
    let vocab = smollm2().vocab();
    let n = vocab.n_tokens() as i32;
    for bad in [Token(-1), Token(n), Token(i32::MAX)] {
        assert!(matches!(vocab.token_to_bytes(bad, ControlText::Hide), Err(TokenizeError::InvalidToken { .. })));
        assert!(vocab.text(bad).is_err() && vocab.attrs(bad).is_err() && vocab.score(bad).is_err());
        assert!(!vocab.is_eog(bad) && !vocab.is_control(bad));
    }
    assert!(vocab.detokenize(&[Token(1), Token(n)]).is_err());

    // Longer than llama.cpp can address: refused before any C call.
    let huge = String::from_utf8(vec![b'a'; i32::MAX as usize + 1]).unwrap();
    assert!(matches!(vocab.tokenize(&huge, AddSpecial::No), Err(TokenizeError::TooLong(_))));
}
