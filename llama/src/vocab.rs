//! Tokenization: a borrowed view of a model's vocabulary.

use std::ffi::c_char;
use std::marker::PhantomData;

use crate::error::TokenizeError;
use crate::Token;

/// A model's vocabulary, borrowed from its [`Model`](crate::Model).
///
/// ```no_run
/// let model = llama::Model::load("model.gguf")?;
/// let vocab = model.vocab();
/// let tokens = vocab.tokenize("Hello, world", true)?;
/// assert_eq!(vocab.detokenize(&tokens)?, "Hello, world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy)]
pub struct Vocab<'m> {
    ptr: *const llama_sys::llama_vocab,
    _model: PhantomData<&'m crate::Model>,
}

// SAFETY: the vocab is owned by an immutable model and llama.cpp documents its tokenizer API as
// thread-safe; the borrow keeps the model alive.
unsafe impl Send for Vocab<'_> {}
// SAFETY: as above; all methods only read.
unsafe impl Sync for Vocab<'_> {}

impl std::fmt::Debug for Vocab<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocab").field("n_tokens", &self.n_tokens()).finish()
    }
}

impl<'m> Vocab<'m> {
    pub(crate) fn new(ptr: *const llama_sys::llama_vocab) -> Self {
        Vocab { ptr, _model: PhantomData }
    }

    /// Number of tokens in the vocabulary.
    pub fn n_tokens(&self) -> i32 {
        // SAFETY: the vocab is alive for 'm.
        unsafe { llama_sys::llama_vocab_n_tokens(self.ptr) }
    }

    /// Checks that `token` is in the vocabulary.
    pub fn check(&self, token: Token) -> Result<Token, TokenizeError> {
        let n_vocab = self.n_tokens();
        if (0..n_vocab).contains(&token.0) {
            Ok(token)
        } else {
            Err(TokenizeError::InvalidToken { token: token.0, n_vocab })
        }
    }

    /// Tokenizes user text. Special-token syntax in `text` (e.g. `<|im_end|>`) is treated as
    /// plain text, so input cannot inject control tokens. `add_special` adds BOS/EOS where the
    /// model wants them.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<Token>, TokenizeError> {
        self.tokenize_with(text, add_special, false)
    }

    /// Like [`tokenize`](Self::tokenize), but `parse_special` chooses whether special-token
    /// syntax in `text` becomes control tokens. Only enable it for trusted text, such as a
    /// rendered chat template.
    pub fn tokenize_with(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<Token>, TokenizeError> {
        let len = i32::try_from(text.len()).map_err(|_| TokenizeError::TooLong(text.len()))?;
        // A token covers at least one byte, plus room for BOS/EOS.
        let mut tokens: Vec<Token> = Vec::with_capacity(text.len() + 2);
        for _ in 0..2 {
            let cap = i32::try_from(tokens.capacity()).unwrap_or(i32::MAX);
            // SAFETY: `text` is valid for `len` bytes; `tokens` has room for `cap` tokens and
            // `Token` is `repr(transparent)` over `llama_token`.
            let n = unsafe {
                llama_sys::llama_tokenize(
                    self.ptr,
                    text.as_ptr().cast::<c_char>(),
                    len,
                    tokens.as_mut_ptr().cast(),
                    cap,
                    add_special,
                    parse_special,
                )
            };
            if n == i32::MIN {
                return Err(TokenizeError::TooLong(text.len()));
            }
            if n >= 0 {
                // SAFETY: llama.cpp initialised the first `n <= cap` elements.
                unsafe { tokens.set_len(n as usize) };
                return Ok(tokens);
            }
            // Negative: the count that would have been written. Retry once with that room.
            tokens.reserve_exact(n.unsigned_abs() as usize);
        }
        Err(TokenizeError::Failed(-1))
    }

    /// The bytes of one token's text. Pieces may end inside a UTF-8 character: join them with
    /// a [`Utf8Decoder`](crate::Utf8Decoder). `special` renders control tokens as text.
    pub fn token_to_bytes(&self, token: Token, special: bool) -> Result<Vec<u8>, TokenizeError> {
        self.check(token)?;
        let mut buf = vec![0u8; 32];
        loop {
            let cap = i32::try_from(buf.len()).unwrap_or(i32::MAX);
            // SAFETY: the token is in range; the buffer has `cap` writable bytes.
            let n =
                unsafe { llama_sys::llama_token_to_piece(self.ptr, token.0, buf.as_mut_ptr().cast(), cap, 0, special) };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            buf.resize(n.unsigned_abs() as usize, 0);
        }
    }

    /// Turns tokens back into text (lossy for invalid UTF-8). Control tokens are not rendered.
    pub fn detokenize(&self, tokens: &[Token]) -> Result<String, TokenizeError> {
        for &t in tokens {
            self.check(t)?;
        }
        let n_tokens = i32::try_from(tokens.len()).map_err(|_| TokenizeError::TooLong(tokens.len()))?;
        let mut buf = vec![0u8; tokens.len() * 8 + 16];
        loop {
            let cap = i32::try_from(buf.len()).unwrap_or(i32::MAX);
            // SAFETY: every id was checked; `tokens` is valid for `n_tokens` ids (`Token` is
            // transparent); the buffer has `cap` writable bytes.
            let n = unsafe {
                llama_sys::llama_detokenize(
                    self.ptr,
                    tokens.as_ptr().cast(),
                    n_tokens,
                    buf.as_mut_ptr().cast(),
                    cap,
                    false,
                    false,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            if n == i32::MIN {
                return Err(TokenizeError::TooLong(tokens.len()));
            }
            buf.resize(n.unsigned_abs() as usize, 0);
        }
    }

    /// Whether `token` ends generation (EOS, EOT, ...).
    pub fn is_eog(&self, token: Token) -> bool {
        // SAFETY: the vocab is alive; llama.cpp looks the id up in a set, any value is safe.
        self.check(token).is_ok() && unsafe { llama_sys::llama_vocab_is_eog(self.ptr, token.0) }
    }

    /// Beginning-of-sequence token, if the model has one.
    pub fn bos(&self) -> Option<Token> {
        // SAFETY: the vocab is alive.
        non_null_token(unsafe { llama_sys::llama_vocab_bos(self.ptr) })
    }

    /// End-of-sequence token, if the model has one.
    pub fn eos(&self) -> Option<Token> {
        // SAFETY: the vocab is alive.
        non_null_token(unsafe { llama_sys::llama_vocab_eos(self.ptr) })
    }
}

/// llama.cpp marks a missing special token with -1.
fn non_null_token(id: i32) -> Option<Token> {
    (id >= 0).then_some(Token(id))
}
