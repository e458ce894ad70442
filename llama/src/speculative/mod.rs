//! Speculative decoding: a cheap drafter proposes tokens, the target model verifies them all in
//! one batch. Greedy mode keeps the longest prefix matching the target's own choices plus one
//! bonus token; sampling mode uses speculative sampling (accept with min(1, p/q), otherwise
//! sample from the normalised residual max(0, p − q)), so the output follows the target's
//! distribution exactly. A cost model picks the draft length each round, down to plain
//! decoding when drafting does not pay.
//!
//! What it can gain is set by what verifying a batch costs. On a GPU a batch of 16 costs little
//! more than one token. On a CPU it depends on the weight type's kernels: measured on two x86
//! cores with SmolLM2-135M, 16 tokens cost 4.9× one token in F16, 6.7× in Q4_0 or Q8_0, but 8.7×
//! in Q4_1, which has no batched kernel there; prompt lookup on a copy task gains 2.3×, 1.6× and
//! 1.2–1.4× respectively. `cargo bench --bench verify_cost` measures a model's curve.

mod controller;
mod drafters;

pub use controller::{Controller, MAX_DRAFT};
pub use drafters::{DraftModel, NgramDrafter};

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::driver::Driver;
use crate::error::{BatchError, DecodeError, MemoryError, SampleError, TokenizeError};
use crate::{Batch, Context, FinishReason, GenerateParams, Logits, Output, Piece, Token};

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

/// Proposed continuation tokens, with the drafter's probability of each when it sampled them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    /// The proposed tokens.
    pub tokens: Vec<Token>,
    /// For each token, the full distribution `q` it was drawn from (vocabulary-sized); empty when
    /// the drafter is deterministic (a point mass on the proposed token).
    pub probs: Vec<Vec<f32>>,
    /// The drafter's estimate, for each token, of the probability that it is accepted given
    /// that the ones before it were (the last value extends to the rest); empty lets the
    /// controller use the observed rate.
    pub acceptance: Vec<f64>,
}

/// Proposes continuations. Implemented by [`DraftModel`] and [`NgramDrafter`]; implement it
/// for other strategies.
pub trait Drafter: Send {
    /// Proposes up to `n` tokens that continue `history` (the prompt and all accepted tokens).
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
    /// drafter (see [`Controller::wants_cost_probe`]); not counted as drafts.
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

/// How tokens are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// The target's argmax (output identical to plain greedy decoding).
    Greedy,
    /// Sampling at `temperature` with a seeded generator (output distributed exactly as the
    /// target's).
    Sample {
        /// Softmax temperature (> 0).
        temperature: f32,
        /// Seed.
        seed: u64,
    },
}

/// Runs a target context with a drafter.
///
/// Greedy output is the target's own greedy output, token for token, as long as a batch
/// computes each row exactly as a single-token decode would: on the CPU backend that holds
/// with one thread and weight repacking off ([`ModelBuilder::repack`](crate::ModelBuilder::repack));
/// otherwise rounding differences can flip near-tied choices.
///
/// ```no_run
/// use llama::{speculative::{Mode, NgramDrafter, SpeculativeDecoder}, GenerateParams, Model};
/// let model = Model::load("model.gguf")?;
/// let ctx = model.context(Default::default())?;
/// let mut spec = SpeculativeDecoder::new(ctx, Box::new(NgramDrafter::default()), 8)?;
/// let prompt = model.vocab().tokenize("Copy this: a b c d. Again: a b", llama::AddSpecial::Yes)?;
/// let params = GenerateParams::default().max_tokens(32).stop(["\n"]);
/// for piece in spec.generate_text(&prompt, Mode::Greedy, &params)? {
///     print!("{}", piece?);
/// }
/// println!("\nacceptance {:.2}", spec.stats().acceptance_rate());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SpeculativeDecoder {
    target: Context,
    drafter: Box<dyn Drafter>,
    controller: Controller,
    stats: SpecStats,
    rng: u64,
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
    mode: Mode,
}

impl SpeculativeDecoder {
    /// A decoder drafting at most `max_draft` tokens per round, choosing the length adaptively.
    pub fn new(target: Context, drafter: Box<dyn Drafter>, max_draft: usize) -> Result<Self, SpeculativeError> {
        if max_draft == 0 {
            return Err(SpeculativeError::InvalidParam("max_draft must be at least 1"));
        }
        if max_draft >= target.n_batch() as usize {
            return Err(SpeculativeError::InvalidParam("max_draft + 1 exceeds the target's n_batch"));
        }
        Ok(SpeculativeDecoder {
            target,
            drafter,
            controller: Controller::adaptive(max_draft),
            stats: SpecStats::default(),
            rng: 0,
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

    /// The controller (with what it has measured so far).
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// The target context.
    pub fn target(&self) -> &Context {
        &self.target
    }

    /// Generates after `prompt`, streaming [`Piece`]s as [`Context::generate_tokens`] does and
    /// honouring `params`' max tokens, stop strings and cancellation flag (its sampler-related
    /// options do not apply: `mode` chooses tokens). When the iterator ends, the target's KV
    /// cache holds exactly the prompt and the generated tokens, as if decoded one by one.
    pub fn generate_text<'a>(
        &'a mut self,
        prompt: &[Token],
        mode: Mode,
        params: &GenerateParams,
    ) -> Result<SpeculativeGeneration<'a>, SpeculativeError> {
        let run = self.begin(prompt, params.max_tokens, mode)?;
        Ok(SpeculativeGeneration {
            spec: self,
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
        mode: Mode,
    ) -> Result<Vec<Token>, SpeculativeError> {
        let params = GenerateParams::default().max_tokens(max_tokens);
        let mut out = Vec::new();
        for piece in self.generate_text(prompt, mode, &params)? {
            out.extend(piece?.token);
        }
        Ok(out)
    }

    /// Validates, decodes the prompt exactly as plain generation does (one pass, logits for
    /// the last token) so that plain decoding and speculation see identically computed logits
    /// wherever no draft is involved.
    fn begin(&mut self, prompt: &[Token], max_tokens: usize, mode: Mode) -> Result<Run, SpeculativeError> {
        if let Mode::Sample { temperature, seed } = mode {
            if temperature.is_nan() || temperature <= 0.0 {
                return Err(SpeculativeError::InvalidParam("temperature must be > 0 (use Mode::Greedy)"));
            }
            self.rng = seed ^ 0x9E37_79B9_7F4A_7C15;
        }
        let n_ctx = self.target.n_ctx();
        let extra = max_tokens.saturating_add(self.controller.max_draft() + 1);
        if prompt.is_empty() || prompt.len() + extra > n_ctx as usize {
            return Err(SpeculativeError::ContextTooSmall { prompt: prompt.len(), extra, n_ctx });
        }
        for &t in prompt {
            self.target.vocab().check(t)?;
        }
        self.stats = SpecStats { draft_lengths: vec![0; self.controller.max_draft() + 1], ..SpecStats::default() };
        self.target.clear_kv();
        let start = Instant::now();
        self.target.decode_tokens(prompt, 0, 0)?;
        let batch = Batch::new(self.controller.max_draft() + 1, 1);
        self.stats.prompt_time = start.elapsed();
        Ok(Run { history: prompt.to_vec(), prompt_len: prompt.len(), batch, mode })
    }

    /// One round: draft, verify in one batch, roll back the rejected part. Returns the new
    /// tokens (at most `remaining`), ending early with an end-of-generation token if one came;
    /// the others are appended to the history.
    ///
    /// Invariant between rounds: the cache holds `history[..len - 1]`; the last token waits to
    /// be verified together with the next draft. (The very first token comes from the
    /// prompt's logits.)
    fn round(&mut self, run: &mut Run, remaining: usize) -> Result<Vec<Token>, SpeculativeError> {
        if run.history.len() == run.prompt_len {
            let logits = self.target.logits(Output::Last).ok_or(SampleError::NoLogits(Output::Last))?;
            let first = match run.mode {
                Mode::Greedy => argmax(logits),
                Mode::Sample { temperature, .. } => sample_index(&softmax(logits, temperature), &mut self.rng),
            };
            if !self.target.vocab().is_eog(first) {
                run.history.push(first);
            }
            return Ok(vec![first]);
        }
        let pos = run.history.len() - 1;
        let cost = self.drafter.cost_per_token();
        // A placeholder draft (the last token again) prices a batch of two without running a
        // costly drafter that might not pay; if it happens to be right, it counts.
        let probe = remaining > 1 && self.controller.wants_cost_probe(cost);
        let budget = if probe { 1 } else { self.controller.budget(cost).min(remaining - 1) };
        let t0 = Instant::now();
        let draft = if probe {
            Draft { tokens: vec![run.history[pos]], ..Draft::default() }
        } else if budget > 0 {
            self.drafter.draft(&run.history, budget)?
        } else {
            Draft::default()
        };
        let draft_time = t0.elapsed();
        let available = draft.tokens.len().min(budget);
        let k = if probe || available == 0 { available } else { self.controller.trim(available, &draft.acceptance) };
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
        // Reading logits synchronises, so the time is the decode's.
        let mut accepted = 0;
        let mut bonus = None;
        for i in 0..=k {
            let logits = self.target.logits(Output::At(i)).ok_or(SampleError::NoLogits(Output::At(i)))?;
            let q = draft.probs.get(i).filter(|q| !q.is_empty()).map(Vec::as_slice);
            let proposal = draft.tokens.get(i).copied().filter(|_| i < k);
            match (run.mode, proposal) {
                (Mode::Greedy, Some(d)) if argmax(logits) == d => accepted += 1,
                (Mode::Greedy, _) => {
                    bonus = Some(argmax(logits));
                    break;
                }
                (Mode::Sample { temperature, .. }, proposal) => {
                    let p = softmax(logits, temperature);
                    match verify_step(&p, proposal, q, &mut self.rng) {
                        Verdict::Accept => accepted += 1,
                        Verdict::Replace(t) => {
                            bonus = Some(t);
                            break;
                        }
                    }
                }
            }
        }
        let verify_time = t1.elapsed();
        // Roll back rejected drafts: keep the verified token and the accepted drafts.
        self.target.kv_seq_rm(0, (pos + 1 + accepted)..)?;
        if probe {
            self.controller.observe_verify(k, verify_time);
        } else {
            self.controller.observe(k, accepted, draft_time, verify_time);
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
            let new = self.spec.round(&mut self.run, self.driver.remaining())?;
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

/// Outcome of verifying one draft position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the proposed token.
    Accept,
    /// Stop here with this token instead (a rejection's resample, or the bonus token).
    Replace(Token),
}

/// Speculative sampling at one position: target distribution `p`; `proposal` drawn from `q`
/// (`None` = point mass on the proposal). Accept with probability min(1, p/q); otherwise
/// sample from the residual max(0, p − q), normalised. With no proposal, sample from `p`.
/// `rng` is the state of the generator (xorshift64*).
pub fn verify_step(p: &[f32], proposal: Option<Token>, q: Option<&[f32]>, rng: &mut u64) -> Verdict {
    let Some(x) = proposal else {
        return Verdict::Replace(sample_index(p, rng));
    };
    let i = x.0 as usize;
    let px = p.get(i).copied().unwrap_or(0.0);
    let qx = q.map_or(1.0, |q| q.get(i).copied().unwrap_or(0.0));
    if qx > 0.0 && uniform(rng) * qx < px {
        return Verdict::Accept;
    }
    let residual: Vec<f32> = match q {
        Some(q) => p.iter().zip(q).map(|(a, b)| (a - b).max(0.0)).collect(),
        None => p.iter().enumerate().map(|(j, &a)| if j == i { 0.0 } else { a }).collect(),
    };
    if residual.iter().sum::<f32>() <= 0.0 {
        return Verdict::Replace(sample_index(p, rng));
    }
    Verdict::Replace(sample_index(&residual, rng))
}

fn argmax(row: &[f32]) -> Token {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    Token(best as i32)
}

/// Softmax of `logits` at `temperature`.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p: Vec<f32> = logits.iter().map(|&l| ((l - max) / temperature).exp()).collect();
    let sum: f32 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= sum);
    p
}

/// xorshift64* in [0, 1).
pub(crate) fn uniform(state: &mut u64) -> f32 {
    if *state == 0 {
        *state = 0x2545_F491_4F6C_DD1D;
    }
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    ((state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32) / (1u64 << 24) as f32
}

/// Draws an index from unnormalised weights with the generator `verify_step` uses.
pub fn sample_index(weights: &[f32], rng: &mut u64) -> Token {
    let total: f32 = weights.iter().sum();
    let mut target = uniform(rng) * total;
    for (i, &w) in weights.iter().enumerate() {
        if target < w {
            return Token(i as i32);
        }
        target -= w;
    }
    Token(weights.iter().rposition(|&w| w > 0.0).unwrap_or(0) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rule = fn(&[f32], Option<Token>, Option<&[f32]>, &mut u64) -> Verdict;

    /// Empirical distribution of the verified token after one speculative step.
    fn histogram(p: &[f32], q: &[f32], draws: usize, rule: Rule) -> Vec<f64> {
        let mut rng = 12345u64;
        let mut counts = vec![0usize; p.len()];
        for _ in 0..draws {
            let x = sample_index(q, &mut rng);
            let t = match rule(p, Some(x), Some(q), &mut rng) {
                Verdict::Accept => x,
                Verdict::Replace(t) => t,
            };
            counts[t.0 as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    fn tv(a: &[f64], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, &y)| (x - f64::from(y)).abs()).sum::<f64>() / 2.0
    }

    #[test]
    fn speculative_sampling_preserves_the_target_distribution() {
        let p = [0.5, 0.2, 0.15, 0.1, 0.05];
        let q = [0.1, 0.4, 0.1, 0.3, 0.1];
        let h = histogram(&p, &q, 20_000, verify_step);
        assert!(tv(&h, &p) < 0.015, "TV {}", tv(&h, &p));
        // A wrong rule (always accept the draft) reproduces q, not p: the same test fails.
        let wrong: Rule = |_, _, _, _| Verdict::Accept;
        let h = histogram(&p, &q, 20_000, wrong);
        assert!(tv(&h, &p) > 0.1, "TV {}", tv(&h, &p));
    }
}
