//! Speculative decoding: a cheap drafter proposes tokens, the target model verifies them all in
//! one batch. The caller's [`Sampler`] chain — greedy, or top-k/top-p/temperature with a seeded
//! draw, penalties, a grammar — chooses the target's token at each verified position exactly as
//! it would in plain generation; a draft token is kept while it equals that choice, and the
//! first choice that differs ends the round as its bonus token. So the output is the output of
//! plain generation with the same chain (wherever a batch computes each row as a single-token
//! decode would), and a drafter can only change the speed, never the text. A cost model picks
//! the draft length each round, down to plain decoding when drafting does not pay.
//!
//! What it can gain is set by what verifying a batch costs. On a GPU a batch of 16 costs little
//! more than one token. On a CPU it depends on the weight type's kernels: measured on two x86
//! cores with SmolLM2-135M, 16 tokens cost 4.9× one token in F16, 6.7× in Q4_0 or Q8_0, but 8.7×
//! in Q4_1, which has no batched kernel there; prompt lookup on a copy task gains 2.1–2.3×,
//! 1.6–1.7× and 1.2–1.4× respectively. `cargo bench --bench verify_cost` measures a model's curve.

mod controller;
mod drafters;
mod tally;

pub use controller::{ControllerReport, Phase, MAX_DRAFT};

use controller::{Controller, Plan};
pub use drafters::{CopyDrafter, DraftModel};

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::driver::Driver;
use crate::error::{BatchError, DecodeError, MemoryError, SampleError, TokenizeError};
use crate::{Batch, Context, FinishReason, GenerateParams, Logits, Output, Piece, Sampler, Token};

/// Why speculative decoding failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpeculativeError {
    /// The draft and target models do not share a vocabulary.
    #[error("draft and target vocabularies differ: {0}")]
    VocabMismatch(String),
    /// A parameter is out of range.
    #[error("invalid speculative parameter: {0}")]
    InvalidParam(&'static str),
    /// The prompt plus the draft budget does not fit in a context.
    #[error("prompt of {prompt} tokens plus {extra} does not fit in the context of {n_ctx}")]
    ContextTooSmall {
        /// Prompt tokens.
        prompt: usize,
        /// Tokens needed beyond the prompt.
        extra: usize,
        /// Context size.
        n_ctx: usize,
    },
    /// Decoding failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A KV-cache operation failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A batch could not be built.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// Tokenization failed.
    #[error(transparent)]
    Tokenize(#[from] TokenizeError),
    /// Sampling failed (for instance, a decode left no logits where they were read).
    #[error(transparent)]
    Sample(#[from] SampleError),
}

/// Proposed continuation tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    /// The proposed tokens.
    pub tokens: Vec<Token>,
    /// The drafter's estimate, for each token, of the probability that it is accepted given
    /// that the ones before it were (the last value extends to the rest); empty lets the
    /// controller use the observed rate.
    pub acceptance: Vec<f64>,
}

/// Proposes continuations. Implemented by [`DraftModel`] and [`CopyDrafter`]; implement it
/// for other strategies.
pub trait Drafter: Send {
    /// Told when a generation starts from `prompt`: a drafter that keeps state about the
    /// history can tell a continuation of the last one from a new text here, once, instead of
    /// comparing the whole history in every [`draft`](Self::draft) call.
    fn begin(&mut self, prompt: &[Token]) {
        let _ = prompt;
    }
    /// Proposes up to `n` tokens that continue `history` (the prompt and all accepted tokens).
    /// Within a generation each call's history extends the last one's.
    fn draft(&mut self, history: &[Token], n: usize) -> Result<Draft, SpeculativeError>;
    /// Told after verification: of the last draft, `drafted` tokens were verified and the
    /// first `accepted` of them kept.
    fn feedback(&mut self, drafted: usize, accepted: usize) {
        let _ = (drafted, accepted);
    }
    /// Seconds one drafted token costs, if known (used by the adaptive controller).
    fn cost_per_token(&self) -> Option<f64> {
        None
    }
}

/// Counters of a speculative run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecStats {
    /// Verification rounds (target batch decodes).
    pub rounds: usize,
    /// Draft tokens proposed and verified.
    pub drafted: usize,
    /// Draft tokens accepted.
    pub accepted: usize,
    /// Tokens produced.
    pub generated: usize,
    /// Time spent drafting.
    pub draft_time: Duration,
    /// Time spent verifying (target decodes).
    pub verify_time: Duration,
    /// Time spent on the prompt.
    pub prompt_time: Duration,
    /// Time from the end of the prompt to the last token.
    pub generation_time: Duration,
    /// How often each draft length was chosen (index = length).
    pub draft_lengths: Vec<usize>,
    /// Rounds that verified a placeholder token to price a batch before running a costly
    /// drafter (a draft model that might not pay); not counted as drafts.
    pub cost_probes: usize,
}

impl SpecStats {
    /// Accepted share of drafted tokens.
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }

    /// Tokens produced per target decode.
    pub fn tokens_per_round(&self) -> f64 {
        self.generated as f64 / self.rounds.max(1) as f64
    }

    /// Tokens generated per second (prompt time excluded).
    pub fn tokens_per_second(&self) -> f64 {
        self.generated as f64 / self.generation_time.as_secs_f64().max(1e-9)
    }
}

/// Runs a target context with a drafter.
///
/// The output is what [`Context::generate`] produces with the same sampler chain, token for
/// token, as long as a batch computes each row exactly as a single-token decode would: on the
/// CPU backend that holds with one thread and weight repacking off
/// ([`ModelBuilder::repack`](crate::ModelBuilder::repack)); otherwise rounding differences can
/// flip near-tied choices.
///
/// ```no_run
/// use llama::{speculative::{CopyDrafter, SpeculativeDecoder}, GenerateParams, Model, Sampler};
/// let model = Model::load("model.gguf")?;
/// let ctx = model.context(Default::default())?;
/// let mut spec = SpeculativeDecoder::new(ctx, Box::new(CopyDrafter::default()), 8)?;
/// let prompt = model.vocab().tokenize("Copy this: a b c d. Again: a b", llama::AddSpecial::Yes)?;
/// let params = GenerateParams::default().max_tokens(32).stop(["\n"]);
/// let mut sampler = Sampler::chain().top_k(40).top_p(0.95).temp(0.8).dist(42);
/// for piece in spec.generate_text(&prompt, &mut sampler, &params)? {
///     print!("{}", piece?);
/// }
/// println!("\nacceptance {:.2}", spec.stats().acceptance_rate());
/// // The conversation goes on with plain generation on the same context and cache.
/// let ctx = spec.into_inner();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SpeculativeDecoder {
    target: Context,
    drafter: Box<dyn Drafter>,
    controller: Controller,
    stats: SpecStats,
}

impl std::fmt::Debug for SpeculativeDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeculativeDecoder").field("stats", &self.stats).finish()
    }
}

/// State of one generation: the prompt and every token produced.
struct Run {
    history: Vec<Token>,
    prompt_len: usize,
    batch: Batch,
}

impl SpeculativeDecoder {
    /// A decoder drafting at most `max_draft` tokens per round, choosing the length adaptively.
    pub fn new(target: Context, drafter: Box<dyn Drafter>, max_draft: usize) -> Result<Self, SpeculativeError> {
        if max_draft == 0 {
            return Err(SpeculativeError::InvalidParam("max_draft must be at least 1"));
        }
        if max_draft >= target.n_batch() {
            return Err(SpeculativeError::InvalidParam("max_draft + 1 exceeds the target's n_batch"));
        }
        Ok(SpeculativeDecoder {
            target,
            drafter,
            controller: Controller::adaptive(max_draft),
            stats: SpecStats::default(),
        })
    }

    /// Uses a fixed draft length instead of the adaptive controller.
    pub fn fixed(mut self, draft: usize) -> Self {
        self.controller = Controller::fixed(draft);
        self
    }

    /// Statistics of the last generation.
    pub fn stats(&self) -> &SpecStats {
        &self.stats
    }

    /// What the draft-length controller has measured so far: verify cost by draft length, draft
    /// cost, acceptance.
    pub fn report(&self) -> ControllerReport {
        self.controller.report()
    }

    /// The target context.
    pub fn target(&self) -> &Context {
        &self.target
    }

    /// The target context back, its cache holding the last prompt and output: a conversation
    /// can go on with plain generation.
    pub fn into_inner(self) -> Context {
        self.target
    }

    /// The target context and the drafter back.
    pub fn into_parts(self) -> (Context, Box<dyn Drafter>) {
        (self.target, self.drafter)
    }

    /// Generates after `prompt`, streaming [`Piece`]s as [`Context::generate_tokens`] does:
    /// `sampler` chooses every token (it is reset first, as plain generation resets it), and
    /// `params`' max tokens, stop strings, shown control tokens and cancellation flag apply.
    /// When the iterator ends, the target's KV cache holds exactly the prompt and the generated
    /// tokens, as if decoded one by one.
    pub fn generate_text<'a>(
        &'a mut self,
        prompt: &[Token],
        sampler: &'a mut Sampler,
        params: &GenerateParams,
    ) -> Result<SpeculativeGeneration<'a>, SpeculativeError> {
        let run = self.begin(prompt, params.max_tokens)?;
        sampler.reset();
        Ok(SpeculativeGeneration {
            spec: self,
            sampler,
            run,
            queue: VecDeque::new(),
            driver: Driver::new(params),
            started: Instant::now(),
            done: false,
        })
    }

    /// Generates up to `max_tokens` after `prompt` (stopping at end-of-generation, which is
    /// not included) and returns the tokens.
    pub fn generate(
        &mut self,
        prompt: &[Token],
        max_tokens: usize,
        sampler: &mut Sampler,
    ) -> Result<Vec<Token>, SpeculativeError> {
        let params = GenerateParams::default().max_tokens(max_tokens);
        let mut out = Vec::new();
        for piece in self.generate_text(prompt, sampler, &params)? {
            out.extend(piece?.token);
        }
        Ok(out)
    }

    /// Validates, decodes the prompt exactly as plain generation does (one pass, logits for
    /// the last token) so that plain decoding and speculation see identically computed logits
    /// wherever no draft is involved.
    fn begin(&mut self, prompt: &[Token], max_tokens: usize) -> Result<Run, SpeculativeError> {
        let n_ctx = self.target.n_ctx();
        let extra = max_tokens.saturating_add(self.controller.max_draft() + 1);
        if prompt.is_empty() || prompt.len() + extra > n_ctx {
            return Err(SpeculativeError::ContextTooSmall { prompt: prompt.len(), extra, n_ctx });
        }
        for &t in prompt {
            self.target.vocab().check(t)?;
        }
        self.stats = SpecStats { draft_lengths: vec![0; self.controller.max_draft() + 1], ..SpecStats::default() };
        self.target.clear_kv();
        self.drafter.begin(prompt);
        let start = Instant::now();
        self.target.decode_tokens(prompt, 0, 0)?;
        let batch = Batch::new(self.controller.max_draft() + 1, 1);
        self.stats.prompt_time = start.elapsed();
        Ok(Run { history: prompt.to_vec(), prompt_len: prompt.len(), batch })
    }

    /// One round: draft, verify in one batch, roll back the rejected part. Returns the new
    /// tokens (at most `remaining`), ending early with an end-of-generation token if one came;
    /// the others are appended to the history.
    ///
    /// Invariant between rounds: the cache holds `history[..len - 1]`; the last token waits to
    /// be verified together with the next draft. (The very first token comes from the
    /// prompt's logits.)
    fn round(
        &mut self,
        run: &mut Run,
        sampler: &mut Sampler,
        remaining: usize,
    ) -> Result<Vec<Token>, SpeculativeError> {
        if run.history.len() == run.prompt_len {
            let first = sampler.sample(&self.target, Output::Last)?;
            if !self.target.vocab().is_eog(first) {
                run.history.push(first);
            }
            return Ok(vec![first]);
        }
        let pos = run.history.len() - 1;
        let plan = self.controller.plan(self.drafter.cost_per_token(), remaining - 1);
        let probe = plan == Plan::CostProbe;
        let t0 = Instant::now();
        let (draft, asked) = match plan {
            // The last token again, as a draft: if it happens to be right, it counts.
            Plan::CostProbe => (Draft { tokens: vec![run.history[pos]], ..Draft::default() }, 1),
            Plan::Draft(ask) => (self.drafter.draft(&run.history, ask)?, ask),
            Plan::Plain => (Draft::default(), 0),
        };
        let draft_time = t0.elapsed();
        let available = draft.tokens.len().min(asked);
        let k = if probe || available == 0 { available } else { self.controller.choose(available, &draft.acceptance) };
        for &t in &draft.tokens[..k] {
            self.target.vocab().check(t)?;
        }

        let batch = &mut run.batch;
        batch.clear();
        batch.add(run.history[pos], pos, &[0], Logits::Want)?;
        for (i, &t) in draft.tokens[..k].iter().enumerate() {
            batch.add(t, pos + 1 + i, &[0], Logits::Want)?;
        }
        let t1 = Instant::now();
        self.target.decode(batch)?;
        // The chain chooses at each row as plain generation would at that position (reading the
        // first row's logits synchronises, so the time is the decode's). A draft token stands
        // while it is the chain's choice; the first other choice is the round's last token. The
        // chain samples once per token kept, so its state (penalties, grammar, RNG) follows the
        // output exactly.
        let mut accepted = 0;
        let mut bonus = None;
        for i in 0..=k {
            let choice = sampler.sample(&self.target, Output::At(i))?;
            if i < k && choice == draft.tokens[i] && !self.target.vocab().is_eog(choice) {
                accepted += 1;
            } else {
                bonus = Some(choice);
                break;
            }
        }
        let verify_time = t1.elapsed();
        // Roll back rejected drafts: keep the verified token and the accepted drafts.
        self.target.kv_seq_rm(0, (pos + 1 + accepted)..)?;
        if probe {
            self.controller.record_cost_probe(verify_time);
        } else {
            self.controller.record(k, accepted, draft_time, verify_time);
            self.drafter.feedback(k, accepted);
        }
        self.stats.rounds += 1;
        self.stats.verify_time += verify_time;
        if probe {
            self.stats.cost_probes += 1;
        } else {
            self.stats.drafted += k;
            self.stats.accepted += accepted;
            self.stats.draft_time += draft_time;
            if let Some(slot) = self.stats.draft_lengths.get_mut(k) {
                *slot += 1;
            }
        }
        let mut new = Vec::with_capacity(accepted + 1);
        for t in draft.tokens[..accepted].iter().copied().chain(bonus).take(remaining) {
            new.push(t);
            if self.target.vocab().is_eog(t) {
                break;
            }
            run.history.push(t);
        }
        Ok(new)
    }

    /// Leaves the cache as if the first `generated` tokens had been decoded one by one.
    fn finish(&mut self, run: &mut Run, generated: usize) -> Result<(), SpeculativeError> {
        run.history.truncate(run.prompt_len + generated);
        if generated == 0 {
            return Ok(()); // the cache holds exactly the prompt
        }
        let pos = run.history.len() - 1;
        self.target.kv_seq_rm(0, pos..)?;
        run.batch.clear();
        run.batch.add(run.history[pos], pos, &[0], Logits::Want)?;
        self.target.decode(&run.batch)?;
        Ok(())
    }
}

/// A running speculative generation: an iterator of [`Piece`]s. See
/// [`SpeculativeDecoder::generate_text`].
pub struct SpeculativeGeneration<'a> {
    spec: &'a mut SpeculativeDecoder,
    sampler: &'a mut Sampler,
    run: Run,
    /// Verified tokens not yet emitted.
    queue: VecDeque<Token>,
    driver: Driver,
    started: Instant,
    /// Ended (finished, or failed).
    done: bool,
}

impl std::fmt::Debug for SpeculativeGeneration<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeculativeGeneration").field("finish", &self.driver.finish_reason()).finish()
    }
}

impl SpeculativeGeneration<'_> {
    /// Why generation ended (`None` while it runs).
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.driver.finish_reason()
    }

    /// The text emitted so far.
    pub fn text(&self) -> &str {
        self.driver.text()
    }

    /// Statistics so far.
    pub fn stats(&self) -> &SpecStats {
        &self.spec.stats
    }

    fn step(&mut self) -> Result<Option<Piece>, SpeculativeError> {
        if self.queue.is_empty() {
            if !self.driver.may_continue() {
                return Ok(None);
            }
            let new = self.spec.round(&mut self.run, self.sampler, self.driver.remaining())?;
            self.queue.extend(new);
        }
        let Some(token) = self.queue.pop_front() else {
            return Ok(None);
        };
        let piece = self.driver.push(&self.spec.target.vocab(), token, None)?;
        self.spec.stats.generated = self.driver.generated();
        Ok(piece)
    }
}

impl Iterator for SpeculativeGeneration<'_> {
    type Item = Result<Piece, SpeculativeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.driver.finish_reason().is_none() {
            match self.step() {
                Ok(Some(piece)) => {
                    self.spec.stats.generation_time = self.started.elapsed();
                    return Some(Ok(piece));
                }
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.done = true;
        let generated = self.spec.stats.generated;
        let fixed = self.spec.finish(&mut self.run, generated);
        self.spec.stats.generation_time = self.started.elapsed();
        if let Err(e) = fixed {
            return Some(Err(e));
        }
        self.driver.flush().map(Ok)
    }
}

/// The most likely token of a row of logits (the first of equals).
pub(crate) fn argmax(row: &[f32]) -> Token {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    Token(best as i32)
}
