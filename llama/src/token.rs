//! Token ids and UTF-8-correct streaming of token pieces.

/// A token id in a model's vocabulary.
///
/// Ids are checked against the vocabulary wherever they reach llama.cpp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Token(pub i32);

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Turns the bytes of successive token pieces into text without ever splitting a UTF-8
/// character: bytes of an incomplete character wait for the next piece.
///
/// Invalid sequences become U+FFFD, as in [`String::from_utf8_lossy`].
///
/// ```
/// let mut d = llama::Utf8Decoder::default();
/// let euro = "€".as_bytes();
/// assert_eq!(d.push(&euro[..1]), "");
/// assert_eq!(d.push(&euro[1..]), "€");
/// assert_eq!(d.finish(), "");
/// ```
#[derive(Debug, Default, Clone)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// Adds bytes; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: `valid_up_to` bytes are valid UTF-8 by definition.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete character at the end: keep it for the next piece.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes bytes still waiting (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::Utf8Decoder;

    #[test]
    fn byte_by_byte_equals_whole() {
        let text = "héllo wörld — 日本語 🦀 ok";
        let mut d = Utf8Decoder::default();
        let mut out = String::new();
        for b in text.as_bytes() {
            out += &d.push(std::slice::from_ref(b));
        }
        out += &d.finish();
        assert_eq!(out, text);
    }

    #[test]
    fn invalid_bytes_become_replacement() {
        let mut d = Utf8Decoder::default();
        assert_eq!(d.push(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(d.push(b"\xe2\x82"), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }
}
