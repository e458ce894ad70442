//! Tokenization: a borrowed view of a model's vocabulary.

use std::ffi::c_char;
use std::marker::PhantomData;

use crate::error::TokenizeError;
use crate::Token;

/// Whether [`Vocab::tokenize`] adds the special tokens the model wants around a text (BOS,
/// sometimes EOS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddSpecial {
    /// Add them: the start of a prompt.
    Yes,
    /// Do not: text that continues a sequence.
    No,
}

/// What special-token syntax in a text (`<|im_end|>`, `<s>`) becomes in
/// [`Vocab::tokenize_with`]. A security decision: control tokens in user input can end a
/// turn, fake a system message or call a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialSyntax {
    /// Plain text, tokenized like any other characters: for anything a user wrote.
    Text,
    /// The control tokens it names: for trusted text only, such as a rendered chat template.
    Tokens,
}

/// Whether [`Vocab::token_to_bytes`] renders control tokens (`<|im_end|>`, BOS) as their text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlText {
    /// Control tokens render as nothing: text for a reader.
    Hide,
    /// Control tokens render as their text: for logs, debugging and re-tokenizing.
    Show,
}

/// A model's vocabulary, borrowed from its [`Model`](crate::Model).
///
/// ```no_run
/// let model = llama::Model::load("model.gguf")?;
/// let vocab = model.vocab();
/// let tokens = vocab.tokenize("Hello, world", llama::AddSpecial::Yes)?;
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

    pub(crate) fn as_ptr(&self) -> *const llama_sys::llama_vocab {
        self.ptr
    }

    /// Number of tokens in the vocabulary: valid ids are `0..n_tokens`.
    pub fn n_tokens(&self) -> usize {
        // SAFETY: the vocab is alive for 'm.
        let n = unsafe { llama_sys::llama_vocab_n_tokens(self.ptr) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Every token of the vocabulary, in id order.
    pub fn tokens(&self) -> impl Iterator<Item = Token> {
        // Ids fit an i32: llama.cpp counts them in one.
        (0..self.n_tokens()).map(|i| Token(i as i32))
    }

    /// Checks that `token` is in the vocabulary.
    pub fn check(&self, token: Token) -> Result<Token, TokenizeError> {
        let n_vocab = self.n_tokens();
        if usize::try_from(token.0).is_ok_and(|t| t < n_vocab) {
            Ok(token)
        } else {
            Err(TokenizeError::InvalidToken { token: token.0, n_vocab })
        }
    }

    /// Tokenizes user text. Special-token syntax in `text` (e.g. `<|im_end|>`) is treated as
    /// plain text, so input cannot inject control tokens. [`AddSpecial::Yes`] adds BOS/EOS where
    /// the model wants them.
    ///
    /// ```no_run
    /// # let model = llama::Model::load("m.gguf")?;
    /// let tokens = model.vocab().tokenize("Hello <|im_end|>", llama::AddSpecial::Yes)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Bytes the vocabulary has no token for are dropped, as llama.cpp does (SmolLM2, for one,
    /// has none for six ASCII control characters and for the lead bytes of characters from
    /// U+40000 up), so [`detokenize`](Self::detokenize) of the result can differ from `text`.
    pub fn tokenize(&self, text: &str, add_special: AddSpecial) -> Result<Vec<Token>, TokenizeError> {
        self.tokenize_with(text, add_special, SpecialSyntax::Text)
    }

    /// Like [`tokenize`](Self::tokenize), but `syntax` chooses whether special-token syntax in
    /// `text` becomes control tokens. [`SpecialSyntax::Tokens`] is for trusted text only, such as
    /// a rendered chat template.
    pub fn tokenize_with(
        &self,
        text: &str,
        add_special: AddSpecial,
        syntax: SpecialSyntax,
    ) -> Result<Vec<Token>, TokenizeError> {
        let len = i32::try_from(text.len()).map_err(|_| TokenizeError::TooLong(text.len()))?;
        // A token covers at least one byte, plus room for BOS/EOS.
        let mut tokens: Vec<Token> = Vec::with_capacity(text.len() + 2);
        for _ in 0..2 {
            let cap = i32::try_from(tokens.capacity()).unwrap_or(i32::MAX);
            // SAFETY: `text` is valid for `len` bytes; `tokens` has room for `cap` tokens and
            // `Token` is `repr(transparent)` over `llama_token`.
            let n = crate::barrier::guarded(|| unsafe {
                llama_sys::llama_rs_tokenize(
                    self.ptr,
                    text.as_ptr().cast::<c_char>(),
                    len,
                    tokens.as_mut_ptr().cast(),
                    cap,
                    add_special == AddSpecial::Yes,
                    syntax == SpecialSyntax::Tokens,
                )
            })
            .map_err(TokenizeError::Exception)?;
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
    /// a [`Utf8Decoder`](crate::Utf8Decoder). [`ControlText::Show`] renders control tokens
    /// (`<|im_end|>`) as their text; [`ControlText::Hide`] renders them as nothing.
    pub fn token_to_bytes(&self, token: Token, control: ControlText) -> Result<Vec<u8>, TokenizeError> {
        self.check(token)?;
        let mut buf = vec![0u8; 32];
        loop {
            let cap = i32::try_from(buf.len()).unwrap_or(i32::MAX);
            // SAFETY: the token is in range; the buffer has `cap` writable bytes.
            let n = crate::barrier::guarded(|| unsafe {
                let show = control == ControlText::Show;
                llama_sys::llama_rs_token_to_piece(self.ptr, token.0, buf.as_mut_ptr().cast(), cap, 0, show)
            })
            .map_err(TokenizeError::Exception)?;
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
            let n = crate::barrier::guarded(|| unsafe {
                llama_sys::llama_rs_detokenize(
                    self.ptr,
                    tokens.as_ptr().cast(),
                    n_tokens,
                    buf.as_mut_ptr().cast(),
                    cap,
                    false,
                    false,
                )
            })
            .map_err(TokenizeError::Exception)?;
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

    /// Whether `token` is a control token (rendered only with `special`).
    pub fn is_control(&self, token: Token) -> bool {
        // SAFETY: the id was checked against the vocabulary.
        self.check(token).is_ok() && unsafe { llama_sys::llama_vocab_is_control(self.ptr, token.0) }
    }

    /// The token's raw text as stored in the vocabulary (e.g. `Ġthe` for BPE).
    pub fn text(&self, token: Token) -> Result<String, TokenizeError> {
        self.check(token)?;
        // SAFETY: the id is in range; the string is owned by the vocab, copied before return.
        let text = crate::barrier::guarded(|| unsafe {
            crate::backend::cstr_or_empty(llama_sys::llama_rs_vocab_get_text(self.ptr, token.0))
        });
        text.map_err(TokenizeError::Exception)
    }

    /// The token's score (merge priority or log-probability, depending on the tokenizer).
    pub fn score(&self, token: Token) -> Result<f32, TokenizeError> {
        self.check(token)?;
        // SAFETY: the id is in range.
        crate::barrier::guarded(|| unsafe { llama_sys::llama_rs_vocab_get_score(self.ptr, token.0) })
            .map_err(TokenizeError::Exception)
    }

    /// The token's attribute flags.
    pub fn attrs(&self, token: Token) -> Result<TokenAttrs, TokenizeError> {
        self.check(token)?;
        // SAFETY: the id is in range.
        let attr = crate::barrier::guarded(|| unsafe { llama_sys::llama_rs_vocab_get_attr(self.ptr, token.0) });
        Ok(TokenAttrs(attr.map_err(TokenizeError::Exception)? as u32))
    }

    /// The tokenizer family.
    pub fn vocab_type(&self) -> VocabType {
        use llama_sys::*;
        // SAFETY: the vocab is alive.
        match unsafe { llama_sys::llama_vocab_type(self.ptr) } {
            LLAMA_VOCAB_TYPE_SPM => VocabType::Spm,
            LLAMA_VOCAB_TYPE_BPE => VocabType::Bpe,
            LLAMA_VOCAB_TYPE_WPM => VocabType::Wpm,
            LLAMA_VOCAB_TYPE_UGM => VocabType::Ugm,
            LLAMA_VOCAB_TYPE_RWKV => VocabType::Rwkv,
            LLAMA_VOCAB_TYPE_PLAMO2 => VocabType::Plamo2,
            LLAMA_VOCAB_TYPE_NONE => VocabType::None,
            _ => VocabType::Other,
        }
    }

    /// Whether tokenizing with `add_special` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        // SAFETY: the vocab is alive.
        unsafe { llama_sys::llama_vocab_get_add_bos(self.ptr) }
    }

    /// Whether tokenizing with `add_special` appends EOS.
    pub fn adds_eos(&self) -> bool {
        // SAFETY: the vocab is alive.
        unsafe { llama_sys::llama_vocab_get_add_eos(self.ptr) }
    }
}

macro_rules! special_tokens {
    ($($(#[$doc:meta])* $name:ident => $c:ident;)*) => {
        impl Vocab<'_> {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> Option<Token> {
                    // SAFETY: the vocab is alive; a plain getter.
                    non_null_token(unsafe { llama_sys::$c(self.ptr) })
                }
            )*
        }
    };
}

special_tokens! {
    /// Beginning-of-sequence token, if the model has one.
    bos => llama_vocab_bos;
    /// End-of-sequence token, if the model has one.
    eos => llama_vocab_eos;
    /// End-of-turn token, if the model has one.
    eot => llama_vocab_eot;
    /// Sentence separator token.
    sep => llama_vocab_sep;
    /// Newline token.
    nl => llama_vocab_nl;
    /// Padding token.
    pad => llama_vocab_pad;
    /// Mask token.
    mask => llama_vocab_mask;
    /// Fill-in-the-middle prefix token.
    fim_pre => llama_vocab_fim_pre;
    /// Fill-in-the-middle suffix token.
    fim_suf => llama_vocab_fim_suf;
    /// Fill-in-the-middle middle token.
    fim_mid => llama_vocab_fim_mid;
    /// Fill-in-the-middle padding token.
    fim_pad => llama_vocab_fim_pad;
    /// Fill-in-the-middle repository token.
    fim_rep => llama_vocab_fim_rep;
    /// Fill-in-the-middle file separator token.
    fim_sep => llama_vocab_fim_sep;
}

/// Tokenizer family of a vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VocabType {
    /// No vocabulary.
    None,
    /// SentencePiece (LLaMA 1/2 style, byte fallback).
    Spm,
    /// Byte-level BPE (GPT-2 style).
    Bpe,
    /// WordPiece (BERT).
    Wpm,
    /// Unigram (T5).
    Ugm,
    /// RWKV greedy tokenizer.
    Rwkv,
    /// PLaMo-2.
    Plamo2,
    /// A type newer than this crate.
    Other,
}

/// Attribute flags of a token (llama.cpp's `llama_token_attr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TokenAttrs(pub u32);

impl TokenAttrs {
    /// Unknown token.
    pub const UNKNOWN: TokenAttrs = TokenAttrs(1 << 0);
    /// Unused slot.
    pub const UNUSED: TokenAttrs = TokenAttrs(1 << 1);
    /// Ordinary text.
    pub const NORMAL: TokenAttrs = TokenAttrs(1 << 2);
    /// Control token.
    pub const CONTROL: TokenAttrs = TokenAttrs(1 << 3);
    /// User-defined token.
    pub const USER_DEFINED: TokenAttrs = TokenAttrs(1 << 4);
    /// Raw byte token.
    pub const BYTE: TokenAttrs = TokenAttrs(1 << 5);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: TokenAttrs) -> bool {
        self.0 & other.0 == other.0
    }
}

/// llama.cpp marks a missing special token with -1.
fn non_null_token(id: i32) -> Option<Token> {
    (id >= 0).then_some(Token(id))
}
