//! High-level generation: prompt in, an iterator of UTF-8-correct text pieces out, with stop
//! strings, end-of-generation handling, log-probabilities, timings and prompt-prefix reuse.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{BatchError, DecodeError, MemoryError, SampleError, TokenizeError};
use crate::{Batch, Context, Sampler, Token, Utf8Decoder};

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
    /// The context filled up under [`ContextFull::Stop`].
    ContextFull,
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
        n_ctx: u32,
    },
    /// The context filled up under [`ContextFull::Error`], or could not be shifted.
    #[error("the context is full ({0} tokens)")]
    ContextFull(u32),
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

/// Options for [`Context::generate`].
///
/// ```
/// let params = llama::GenerateParams::default().max_tokens(64).stop(["\n\n"]).logprobs(true);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct GenerateParams {
    pub(crate) max_tokens: usize,
    pub(crate) stop: Vec<String>,
    pub(crate) logprobs: bool,
    pub(crate) add_special: bool,
    pub(crate) parse_special: bool,
    pub(crate) on_full: ContextFull,
    pub(crate) reuse_prefix: bool,
    pub(crate) cancel: Option<Arc<AtomicBool>>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            stop: Vec::new(),
            logprobs: false,
            add_special: true,
            parse_special: false,
            on_full: ContextFull::Stop,
            reuse_prefix: true,
            cancel: None,
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

    /// Add BOS/EOS as the model wants when tokenizing the prompt (default on).
    pub fn add_special(mut self, yes: bool) -> Self {
        self.add_special = yes;
        self
    }

    /// Parse special-token syntax in the prompt (off by default: user text cannot inject
    /// control tokens). Turn on for prompts rendered by a chat template.
    pub fn parse_special(mut self, yes: bool) -> Self {
        self.parse_special = yes;
        self
    }

    /// What to do when the context fills up (default [`ContextFull::Stop`]).
    pub fn on_context_full(mut self, policy: ContextFull) -> Self {
        self.on_full = policy;
        self
    }

    /// Reuse the KV cache for the part of the prompt already decoded by an earlier generation
    /// on this context (default on).
    pub fn reuse_prefix(mut self, yes: bool) -> Self {
        self.reuse_prefix = yes;
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

/// Turns generated tokens into emitted text: UTF-8 reassembly and stop strings (never emitted,
/// not even partly). Shared by plain and speculative generation.
#[derive(Debug, Default)]
pub(crate) struct TextOutput {
    decoder: Utf8Decoder,
    stop: Vec<String>,
    /// All text generated so far and how much of it was emitted.
    text: String,
    emitted: usize,
}

impl TextOutput {
    pub(crate) fn new(stop: &[String]) -> Self {
        TextOutput { stop: stop.to_vec(), ..TextOutput::default() }
    }

    /// The text emitted so far.
    pub(crate) fn text(&self) -> &str {
        &self.text[..self.emitted]
    }

    /// Adds a token's bytes; returns the text now safe to emit and whether a stop string
    /// appeared (generation must end).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> (String, bool) {
        self.text.push_str(&self.decoder.push(bytes));
        self.release()
    }

    /// At the end: text held back only for being a possible stop-string prefix, and any
    /// incomplete UTF-8 (as U+FFFD). Nothing after a stop string.
    pub(crate) fn flush(&mut self, stopped: bool) -> Option<String> {
        let tail = self.decoder.finish();
        self.text.push_str(&tail);
        if stopped || self.emitted >= self.text.len() {
            return None;
        }
        let rest = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        Some(rest)
    }

    /// Emits what can no longer become part of a stop string; detects stop strings.
    fn release(&mut self) -> (String, bool) {
        let stops = &self.stop;
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        // A stop string can start at most `longest - 1` bytes before the unemitted text.
        let mut from = self.emitted.saturating_sub(longest.saturating_sub(1));
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = stops.iter().filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i)).min();
        let end = match hit {
            Some(at) => {
                self.text.truncate(at);
                at.max(self.emitted)
            }
            None => {
                // Hold back the longest suffix that is a prefix of a stop string.
                let hold = stops
                    .iter()
                    .flat_map(|s| (1..s.len()).rev().filter(move |&k| s.is_char_boundary(k)).map(move |k| &s[..k]))
                    .filter(|prefix| self.text.ends_with(prefix))
                    .map(str::len)
                    .max()
                    .unwrap_or(0);
                (self.text.len() - hold).max(self.emitted)
            }
        };
        let out = self.text[self.emitted..end].to_string();
        self.emitted = end;
        (out, hit.is_some())
    }
}

/// A running generation: an iterator of [`Piece`]s. See [`Context::generate`].
pub struct Generation<'a> {
    ctx: &'a mut Context,
    sampler: &'a mut Sampler,
    params: GenerateParams,
    batch: Batch,
    out: TextOutput,
    finish: Option<FinishReason>,
    timings: Timings,
    /// Position of the next token in the sequence.
    pos: usize,
    /// The last sampled token still waits to be decoded.
    pending: Option<Token>,
    failed: bool,
}

impl std::fmt::Debug for Generation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation").field("finish", &self.finish).field("timings", &self.timings).finish()
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
        let tokens = self.vocab().tokenize_with(prompt, params.add_special, params.parse_special)?;
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
        if prompt.is_empty() || prompt.len() >= n_ctx as usize {
            return Err(GenerateError::PromptTooLong { prompt: prompt.len(), n_ctx });
        }
        for &t in prompt {
            self.vocab().check(t)?;
        }
        // Reuse the cached prefix, but always decode at least the last prompt token: its
        // logits start the generation.
        let mut common = if params.reuse_prefix {
            self.history.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1)
        } else {
            0
        };
        let mut history = std::mem::take(&mut self.history);
        if self.kv_seq_rm(0, common as i32..).is_err() {
            common = 0;
            self.clear_kv();
        }
        history.truncate(common);
        self.history = history;

        let n_batch = self.n_batch() as usize;
        let mut batch = Batch::new(n_batch, 1);
        let start = Instant::now();
        let suffix = &prompt[common..];
        for (i, chunk) in suffix.chunks(n_batch).enumerate() {
            batch.clear();
            let last = common + (i + 1) * n_batch >= prompt.len();
            batch.add_sequence(chunk, (common + i * n_batch) as i32, 0, last)?;
            if let Err(e) = self.decode_inner(&batch) {
                self.history.clear();
                let _ = self.kv_seq_rm(0, ..);
                return Err(e.into());
            }
            self.history.extend_from_slice(chunk);
        }
        sampler.reset();
        let timings = Timings {
            prompt_tokens: prompt.len(),
            prompt_decoded: suffix.len(),
            prompt_time: start.elapsed(),
            ..Timings::default()
        };
        batch.clear();
        Ok(Generation {
            ctx: self,
            sampler,
            params: params.clone(),
            batch,
            out: TextOutput::new(&params.stop),
            finish: None,
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
        self.finish
    }

    /// Token counts and times so far.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// The text emitted so far.
    pub fn text(&self) -> &str {
        self.out.text()
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
        match self.params.on_full {
            ContextFull::Stop => {
                self.finish = Some(FinishReason::ContextFull);
                Ok(false)
            }
            ContextFull::Error => Err(GenerateError::ContextFull(n_ctx)),
            ContextFull::Shift { keep } => {
                let keep = keep.min(self.pos.saturating_sub(1));
                let discard = (self.pos - keep) / 2;
                if discard == 0 || !self.ctx.kv_can_shift() {
                    return Err(GenerateError::ContextFull(n_ctx));
                }
                let (k, d, p) = (keep as i32, discard as i32, self.pos as i32);
                let mut history = std::mem::take(&mut self.ctx.history);
                self.ctx.kv_seq_rm(0, k..k + d)?;
                self.ctx.kv_seq_add(0, k + d..p, -d)?;
                history.drain(keep..keep + discard);
                self.ctx.history = history;
                self.pos -= discard;
                Ok(true)
            }
        }
    }

    fn step(&mut self) -> Result<Option<Piece>, GenerateError> {
        if let Some(t) = self.pending.take() {
            if self.pos >= self.ctx.n_ctx() as usize && !self.make_room()? {
                return Ok(None);
            }
            self.batch.clear();
            self.batch.add(t, self.pos as i32, &[0], true)?;
            self.ctx.decode_inner(&self.batch)?;
            self.ctx.history.push(t);
            self.pos += 1;
        }
        if self.timings.generated >= self.params.max_tokens {
            self.finish = Some(FinishReason::Length);
            return Ok(None);
        }
        if self.params.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            self.finish = Some(FinishReason::Cancelled);
            return Ok(None);
        }
        let logprob = if self.params.logprobs { self.ctx.logits_ith(-1).map(log_softmax_row) } else { None };
        let token = self.sampler.sample(self.ctx, -1)?;
        let logprob = logprob.map(|row| row(token));
        if self.ctx.vocab().is_eog(token) {
            self.finish = Some(FinishReason::Eog);
            return Ok(None);
        }
        self.timings.generated += 1;
        self.pending = Some(token);
        let bytes = self.ctx.vocab().token_to_bytes(token, false)?;
        let (text, stopped) = self.out.push(&bytes);
        if stopped {
            self.finish = Some(FinishReason::Stop);
        }
        Ok(Some(Piece { token: Some(token), text, logprob }))
    }
}

/// Returns a function giving the log-probability of a token under `logits`.
fn log_softmax_row(logits: &[f32]) -> impl Fn(Token) -> f32 + '_ {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    move |t: Token| logits.get(t.0 as usize).map_or(f32::NEG_INFINITY, |&l| l - lse)
}

impl Iterator for Generation<'_> {
    type Item = Result<Piece, GenerateError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finish.is_some() || self.failed {
            return None;
        }
        let started = Instant::now();
        let result = self.step();
        self.timings.generation_time += started.elapsed();
        match result {
            Ok(Some(piece)) => Some(Ok(piece)),
            Ok(None) => {
                let rest = self.out.flush(self.finish == Some(FinishReason::Stop))?;
                Some(Ok(Piece { token: None, text: rest, logprob: None }))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
