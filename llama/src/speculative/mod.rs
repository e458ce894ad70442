//! Speculative decoding: a cheap drafter proposes tokens, the target model verifies them all in
//! one batch. Greedy mode keeps the longest prefix matching the target's own choices plus one
//! bonus token; sampling mode uses speculative sampling (accept with min(1, p/q), otherwise
//! sample from the normalised residual max(0, p − q)), so the output follows the target's
//! distribution exactly. A cost model picks the draft length each round, down to plain
//! decoding when drafting does not pay.

mod controller;
mod drafters;

pub use controller::Controller;
pub use drafters::{DraftModel, NgramDrafter};

use std::time::{Duration, Instant};

use crate::error::{BatchError, DecodeError, MemoryError, TokenizeError};
use crate::{Batch, Context, Token};

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
        n_ctx: u32,
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
}

/// Proposed continuation tokens, with the drafter's probability of each when it sampled them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    /// The proposed tokens.
    pub tokens: Vec<Token>,
    /// For each token, the full distribution `q` it was drawn from (vocabulary-sized); empty when
    /// the drafter is deterministic (a point mass on the proposed token).
    pub probs: Vec<Vec<f32>>,
}

/// Proposes continuations. Implemented by [`DraftModel`] and [`NgramDrafter`]; implement it
/// for other strategies.
pub trait Drafter: Send {
    /// Proposes up to `n` tokens that continue `history` (the prompt and all accepted tokens).
    fn draft(&mut self, history: &[Token], n: usize) -> Result<Draft, SpeculativeError>;
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
    /// Draft tokens proposed.
    pub drafted: usize,
    /// Draft tokens accepted.
    pub accepted: usize,
    /// Tokens produced.
    pub generated: usize,
    /// Time spent drafting.
    pub draft_time: Duration,
    /// Time spent verifying (target decodes).
    pub verify_time: Duration,
    /// How often each draft length was chosen (index = length).
    pub draft_lengths: Vec<usize>,
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
/// ```no_run
/// use llama::{speculative::{Mode, NgramDrafter, SpeculativeDecoder}, Model};
/// let model = Model::load("model.gguf")?;
/// let ctx = model.context(Default::default())?;
/// let mut spec = SpeculativeDecoder::new(ctx, Box::new(NgramDrafter::default()), 8)?;
/// let prompt = model.vocab().tokenize("Copy this: a b c d. Again: a b", true)?;
/// let out = spec.generate(&prompt, 32, Mode::Greedy)?;
/// println!("{:?} acceptance {:.2}", out, spec.stats().acceptance_rate());
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

impl SpeculativeDecoder {
    /// A decoder drafting at most `max_draft` tokens per round, choosing the length adaptively.
    pub fn new(target: Context, drafter: Box<dyn Drafter>, max_draft: usize) -> Result<Self, SpeculativeError> {
        if max_draft == 0 {
            return Err(SpeculativeError::InvalidParam("max_draft must be at least 1"));
        }
        if max_draft + 1 > target.n_batch() as usize {
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

    /// Statistics of the last [`generate`](Self::generate).
    pub fn stats(&self) -> &SpecStats {
        &self.stats
    }

    /// The target context.
    pub fn target(&self) -> &Context {
        &self.target
    }

    /// Generates up to `max_tokens` after `prompt` (stopping at end-of-generation, which is
    /// not included). The target's KV cache ends up holding exactly the prompt and the
    /// accepted tokens, as if they had been decoded one by one.
    pub fn generate(
        &mut self,
        prompt: &[Token],
        max_tokens: usize,
        mode: Mode,
    ) -> Result<Vec<Token>, SpeculativeError> {
        if let Mode::Sample { temperature, seed } = mode {
            if temperature.is_nan() || temperature <= 0.0 {
                return Err(SpeculativeError::InvalidParam("temperature must be > 0 (use Mode::Greedy)"));
            }
            self.rng = seed ^ 0x9E37_79B9_7F4A_7C15;
        }
        let n_ctx = self.target.n_ctx();
        let extra = max_tokens + self.controller.max_draft() + 1;
        if prompt.is_empty() || prompt.len() + extra > n_ctx as usize {
            return Err(SpeculativeError::ContextTooSmall { prompt: prompt.len(), extra, n_ctx });
        }
        self.stats = SpecStats { draft_lengths: vec![0; self.controller.max_draft() + 1], ..SpecStats::default() };
        self.target.clear_kv();
        let n_batch = self.target.n_batch() as usize;
        let mut batch = Batch::new(n_batch, 1);
        // The prompt is decoded exactly as plain generation does (one pass, logits for the last
        // token) and the first token comes from those logits, so that plain decoding and
        // speculation see identically computed logits wherever no draft is involved.
        for (i, chunk) in prompt.chunks(n_batch).enumerate() {
            batch.clear();
            let last = (i + 1) * n_batch >= prompt.len();
            batch.add_sequence(chunk, (i * n_batch) as i32, 0, last)?;
            self.target.decode(&batch)?;
        }
        let mut history = prompt.to_vec();
        let mut out = Vec::new();
        let first = {
            let logits = self.target.logits_ith(-1).ok_or(DecodeError::InvalidBatch)?;
            match mode {
                Mode::Greedy => argmax(logits),
                Mode::Sample { temperature, .. } => sample_index(&softmax(logits, temperature), &mut self.rng),
            }
        };
        if self.target.vocab().is_eog(first) || max_tokens == 0 {
            return Ok(out);
        }
        out.push(first);
        history.push(first);
        self.stats.generated += 1;
        // Invariant from here: the cache holds history[..len-1]; the last token waits to be
        // verified together with the next draft.
        'outer: while out.len() < max_tokens {
            let k = self.controller.choose(self.drafter.cost_per_token()).min(max_tokens - out.len() - 1);
            let t0 = Instant::now();
            let draft = if k > 0 { self.drafter.draft(&history, k)? } else { Draft::default() };
            let draft_time = t0.elapsed();
            let k = draft.tokens.len().min(k);
            for &t in &draft.tokens[..k] {
                self.target.vocab().check(t)?;
            }

            let pos = history.len() - 1;
            batch.clear();
            batch.add(history[pos], pos as i32, &[0], true)?;
            for (i, &t) in draft.tokens[..k].iter().enumerate() {
                batch.add(t, (pos + 1 + i) as i32, &[0], true)?;
            }
            let t1 = Instant::now();
            self.target.decode(&batch)?;
            // Reading logits synchronises, so the time is the decode's.
            let mut accepted = 0;
            let mut bonus = None;
            for i in 0..=k {
                let logits = self.target.logits_ith(i as i32).ok_or(DecodeError::InvalidBatch)?;
                let q = draft.probs.get(i).filter(|q| !q.is_empty()).map(Vec::as_slice);
                let proposal = draft.tokens.get(i).copied().filter(|_| i < k);
                match (mode, proposal) {
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
            self.target.kv_seq_rm(0, (pos + 1 + accepted) as i32..)?;
            self.controller.observe(k, accepted, draft_time, verify_time);
            self.stats.rounds += 1;
            self.stats.drafted += k;
            self.stats.accepted += accepted;
            self.stats.draft_time += draft_time;
            self.stats.verify_time += verify_time;
            if let Some(slot) = self.stats.draft_lengths.get_mut(k) {
                *slot += 1;
            }
            let new = draft.tokens[..accepted].iter().copied().chain(bonus);
            for t in new {
                if self.target.vocab().is_eog(t) || out.len() >= max_tokens {
                    break 'outer;
                }
                out.push(t);
                history.push(t);
                self.stats.generated += 1;
            }
        }
        // Leave the cache as if the output had been decoded one by one (the last token too).
        if let Some(&last) = history.last() {
            let pos = history.len() - 1;
            self.target.kv_seq_rm(0, pos as i32..)?;
            batch.clear();
            batch.add(last, pos as i32, &[0], true)?;
            self.target.decode(&batch)?;
        }
        Ok(out)
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
