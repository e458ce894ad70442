//! High-level generation: prompt in, an iterator of UTF-8-correct text pieces out, with stop
//! strings, end-of-generation handling, log-probabilities, timings and prompt-prefix reuse.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::driver::Driver;
use crate::error::{BatchError, DecodeError, MemoryError, SampleError, TokenizeError};
use crate::{AddSpecial, Batch, Context, Logits, Output, Sampler, SpecialSyntax, Token};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinishReason {
    /// `max_tokens` were generated.
    Length,
    /// A stop string appeared (it is not part of the output).
    Stop,
    /// The model produced an end-of-generation token.
    Eog,
    /// The cancellation flag was raised.
    Cancelled,
    /// The context filled up under [`ContextFull::Stop`] (or, in the
    /// [engine](crate::engine), the shared cache had no room left for this sequence).
    ContextFull,
    /// The request's deadline passed ([`engine::Request::timeout`](crate::engine::Request::timeout)).
    Deadline,
    /// In the [engine](crate::engine): its consumer read nothing for the stall timeout
    /// ([`EngineParams::stall_timeout`](crate::engine::EngineParams::stall_timeout)).
    Stalled,
    /// In the [engine](crate::engine): the engine stopped before the request ended.
    Shutdown,
}

/// What to do when generation reaches the end of the context window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextFull {
    /// Stop with [`FinishReason::ContextFull`] (the default).
    Stop,
    /// Fail with [`GenerateError::ContextFull`].
    Error,
    /// Keep the first `keep` tokens, drop half of the rest and shift the remainder back (needs a
    /// model whose cache can shift, see [`Context::kv_can_shift`]).
    Shift {
        /// Tokens at the start (e.g. the system prompt) that are never dropped.
        keep: usize,
    },
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// The prompt could not be tokenized.
    #[error(transparent)]
    Tokenize(#[from] TokenizeError),
    /// The prompt does not fit in the context.
    #[error("prompt of {prompt} tokens does not fit in the context of {n_ctx}")]
    PromptTooLong {
        /// Prompt length in tokens.
        prompt: usize,
        /// Context size.
        n_ctx: usize,
    },
    /// The context filled up under [`ContextFull::Error`], or could not be shifted.
    #[error("the context is full ({0} tokens)")]
    ContextFull(usize),
    /// Decoding failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Sampling failed.
    #[error(transparent)]
    Sample(#[from] SampleError),
    /// A KV-cache operation failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A batch could not be built.
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// Options for [`Context::generate`]: read them as fields, set them with the chaining setters of
/// the same names (or assign the fields).
///
/// ```
/// let params = llama::GenerateParams::default().max_tokens(64).stop(["\n\n"]).logprobs(true);
/// assert_eq!(params.max_tokens, 64);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
#[must_use]
pub struct GenerateParams {
    /// Most tokens to generate (default 256).
    pub max_tokens: usize,
    /// Strings that end generation (none by default); see [`stop`](Self::stop).
    pub stop: Vec<String>,
    /// Whether each piece carries its token's log-probability (default off).
    pub logprobs: bool,
    /// How many most likely alternatives each piece lists (default 0).
    pub top_logprobs: usize,
    /// Whether tokenizing the prompt adds BOS/EOS (default [`AddSpecial::Yes`]).
    pub add_special: AddSpecial,
    /// What special-token syntax in the prompt becomes (default [`SpecialSyntax::Text`]).
    pub special_syntax: SpecialSyntax,
    /// What to do when the context fills up (default [`ContextFull::Stop`]).
    pub on_context_full: ContextFull,
    /// Whether a prompt prefix already in the cache is reused (default on).
    pub reuse_prefix: bool,
    /// The flag that cancels the generation, if any.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Control tokens whose text appears in the output (none by default).
    pub show_special: Vec<Token>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            stop: Vec::new(),
            logprobs: false,
            top_logprobs: 0,
            add_special: AddSpecial::Yes,
            special_syntax: SpecialSyntax::Text,
            on_context_full: ContextFull::Stop,
            reuse_prefix: true,
            cancel: None,
            show_special: Vec::new(),
        }
    }
}

impl GenerateParams {
    /// Most tokens to generate (default 256).
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = n;
        self
    }

    /// Strings that end generation when they appear; they are not emitted, and no partial
    /// stop string is ever emitted either.
    pub fn stop<S: Into<String>>(mut self, stop: impl IntoIterator<Item = S>) -> Self {
        self.stop = stop.into_iter().map(Into::into).filter(|s: &String| !s.is_empty()).collect();
        self
    }

    /// Report each token's log-probability under the model (before sampler transforms).
    pub fn logprobs(mut self, yes: bool) -> Self {
        self.logprobs = yes;
        self
    }

    /// Also report the `n` most likely tokens and their log-probabilities at each step (implies
    /// [`logprobs`](Self::logprobs)).
    pub fn top_logprobs(mut self, n: usize) -> Self {
        self.top_logprobs = n;
        self
    }

    /// Whether tokenizing the prompt adds BOS/EOS as the model wants (default
    /// [`AddSpecial::Yes`]).
    pub fn add_special(mut self, add: AddSpecial) -> Self {
        self.add_special = add;
        self
    }

    /// What special-token syntax in the prompt becomes (default [`SpecialSyntax::Text`]: user
    /// text cannot inject control tokens). [`SpecialSyntax::Tokens`] for prompts rendered by a
    /// chat template.
    pub fn special_syntax(mut self, syntax: SpecialSyntax) -> Self {
        self.special_syntax = syntax;
        self
    }

    /// What to do when the context fills up (default [`ContextFull::Stop`]).
    pub fn on_context_full(mut self, policy: ContextFull) -> Self {
        self.on_context_full = policy;
        self
    }

    /// Reuse the KV cache for the part of the prompt already decoded by an earlier generation
    /// on this context (default on).
    pub fn reuse_prefix(mut self, yes: bool) -> Self {
        self.reuse_prefix = yes;
        self
    }

    /// Special tokens whose text appears in the output (others produce no text): a tool-call
    /// format's markers, which its parser needs to see.
    pub fn show_special(mut self, tokens: impl IntoIterator<Item = Token>) -> Self {
        self.show_special = tokens.into_iter().collect();
        self
    }

    /// A flag that stops generation (with [`FinishReason::Cancelled`]) when raised.
    pub fn cancel(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }
}

/// One generated token and the text it completed.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The token (`None` for the final piece that flushes held-back text).
    pub token: Option<Token>,
    /// Text released by this token: may be empty (an incomplete UTF-8 character, or text that
    /// could still become a stop string) or hold text of earlier tokens.
    pub text: String,
    /// Log-probability of the token, when requested.
    pub logprob: Option<f32>,
    /// The most likely tokens at this step with their log-probabilities, most likely first,
    /// when requested ([`GenerateParams::top_logprobs`]).
    pub top_logprobs: Vec<(Token, f32)>,
}

impl std::fmt::Display for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Token counts and wall time of a generation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Prompt tokens in the request.
    pub prompt_tokens: usize,
    /// Prompt tokens actually decoded (the rest came from the cache).
    pub prompt_decoded: usize,
    /// Time spent decoding the prompt.
    pub prompt_time: Duration,
    /// Tokens generated.
    pub generated: usize,
    /// Time spent generating.
    pub generation_time: Duration,
}

impl Timings {
    /// Prompt tokens decoded per second.
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_decoded as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }

    /// Tokens generated per second.
    pub fn generation_tps(&self) -> f64 {
        self.generated as f64 / self.generation_time.as_secs_f64().max(1e-9)
    }
}

/// A running generation: an iterator of [`Piece`]s. See [`Context::generate`].
pub struct Generation<'a> {
    ctx: &'a mut Context,
    sampler: &'a mut Sampler,
    on_full: ContextFull,
    batch: Batch,
    driver: Driver,
    timings: Timings,
    /// Position of the next token in the sequence.
    pos: usize,
    /// The last sampled token still waits to be decoded.
    pending: Option<Token>,
    failed: bool,
}

impl std::fmt::Debug for Generation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("finish", &self.driver.finish_reason())
            .field("timings", &self.timings)
            .finish()
    }
}

impl Context {
    /// Generates a continuation of `prompt`, streaming pieces as they are produced.
    ///
    /// If an earlier generation on this context left a prompt prefix in the KV cache, only the
    /// new suffix is decoded (see [`Timings::prompt_decoded`]).
    ///
    /// ```no_run
    /// use llama::{GenerateParams, Model, Sampler};
    /// let model = Model::load("model.gguf")?;
    /// let mut ctx = model.context(Default::default())?;
    /// let mut sampler = Sampler::default();
    /// for piece in ctx.generate("Once upon a time", &mut sampler, &GenerateParams::default().max_tokens(64))? {
    ///     print!("{}", piece?);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn generate<'a>(
        &'a mut self,
        prompt: &str,
        sampler: &'a mut Sampler,
        params: &GenerateParams,
    ) -> Result<Generation<'a>, GenerateError> {
        let tokens = self.vocab().tokenize_with(prompt, params.add_special, params.special_syntax)?;
        self.generate_tokens(&tokens, sampler, params)
    }

    /// [`generate`](Self::generate) from prompt tokens.
    pub fn generate_tokens<'a>(
        &'a mut self,
        prompt: &[Token],
        sampler: &'a mut Sampler,
        params: &GenerateParams,
    ) -> Result<Generation<'a>, GenerateError> {
        let n_ctx = self.n_ctx();
        if prompt.is_empty() || prompt.len() >= n_ctx {
            return Err(GenerateError::PromptTooLong { prompt: prompt.len(), n_ctx });
        }
        for &t in prompt {
            self.vocab().check(t)?;
        }
        // Reuse the cached prefix, but always decode at least the last prompt token: its
        // logits start the generation.
        let cached = if params.reuse_prefix { self.ledger.tokens(0) } else { &[] };
        let mut common = cached.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1);
        if self.kv_seq_rm(0, common..).is_err() {
            common = 0;
            self.clear_kv();
        }
        let start = Instant::now();
        let suffix = &prompt[common..];
        if let Err(e) = self.decode_tokens(suffix, common, 0) {
            let _ = self.kv_seq_rm(0, ..);
            return Err(e.into());
        }
        sampler.reset();
        let timings = Timings {
            prompt_tokens: prompt.len(),
            prompt_decoded: suffix.len(),
            prompt_time: start.elapsed(),
            ..Timings::default()
        };
        Ok(Generation {
            ctx: self,
            sampler,
            on_full: params.on_context_full,
            batch: Batch::new(1, 1),
            driver: Driver::new(params),
            timings,
            pos: prompt.len(),
            pending: None,
            failed: false,
        })
    }
}

impl Generation<'_> {
    /// Why generation ended (`None` while it runs).
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.driver.finish_reason()
    }

    /// Token counts and times so far.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// The text emitted so far.
    pub fn text(&self) -> &str {
        self.driver.text()
    }

    /// Runs to the end and returns the whole text.
    pub fn collect_text(mut self) -> Result<String, GenerateError> {
        for piece in self.by_ref() {
            piece?;
        }
        Ok(self.text().to_string())
    }

    /// Makes room when the context is full, per the policy. `Ok(false)`: stop.
    fn make_room(&mut self) -> Result<bool, GenerateError> {
        let n_ctx = self.ctx.n_ctx();
        match self.on_full {
            ContextFull::Stop => {
                self.driver.end(FinishReason::ContextFull);
                Ok(false)
            }
            ContextFull::Error => Err(GenerateError::ContextFull(n_ctx)),
            ContextFull::Shift { keep } => {
                let keep = keep.min(self.pos.saturating_sub(1));
                let discard = (self.pos - keep) / 2;
                if discard == 0 || !self.ctx.kv_can_shift() {
                    return Err(GenerateError::ContextFull(n_ctx));
                }
                let (k, d, p) = (keep, discard, self.pos);
                // A shift moves positions below n_ctx, which fits an i32 (llama.cpp's n_ctx is a u32
                // it refuses beyond i32 positions).
                let delta = -i32::try_from(d).map_err(|_| GenerateError::ContextFull(n_ctx))?;
                let mut tokens = self.ctx.ledger.tokens(0).to_vec();
                self.ctx.kv_seq_rm(0, k..k + d)?;
                self.ctx.kv_seq_add(0, k + d..p, delta)?;
                // The cache now holds exactly these tokens at positions 0..: keep reusing it.
                tokens.drain(keep.min(tokens.len())..(keep + discard).min(tokens.len()));
                self.ctx.ledger.set(0, tokens);
                self.pos -= discard;
                Ok(true)
            }
        }
    }

    fn step(&mut self) -> Result<Option<Piece>, GenerateError> {
        if let Some(t) = self.pending.take() {
            if self.pos >= self.ctx.n_ctx() && !self.make_room()? {
                return Ok(None);
            }
            self.batch.clear();
            self.batch.add(t, self.pos, &[0], Logits::Want)?;
            self.ctx.decode(&self.batch)?;
            self.pos += 1;
        }
        if !self.driver.may_continue() {
            return Ok(None);
        }
        let token = self.sampler.sample(self.ctx, Output::Last)?;
        let logits = if self.driver.wants_logprobs() { self.ctx.logits(Output::Last) } else { None };
        let piece = self.driver.push(&self.ctx.vocab(), token, logits)?;
        if piece.is_some() {
            self.timings.generated += 1;
            self.pending = Some(token);
        }
        Ok(piece)
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<Piece, GenerateError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.driver.finish_reason().is_some() {
            return self.driver.flush().map(Ok);
        }
        let started = Instant::now();
        let result = self.step();
        self.timings.generation_time += started.elapsed();
        match result {
            Ok(Some(piece)) => Some(Ok(piece)),
            Ok(None) => self.driver.flush().map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
