//! What goes into each engine step: one token for every generating sequence first, then a
//! prefill budget shared round-robin by the sequences still reading their prompts (chunked
//! prefill). A long prompt therefore delays running streams by one chunk per step, never by its
//! whole prefill, and the [`Pacer`] sizes that chunk from measured costs so a step that reads
//! prompts takes at most a set multiple of a decode-only step.

use super::slots::Slot;
use crate::error::BatchError;
use crate::{Batch, Logits};

/// Sizes the prefill budget from what steps cost. A prompt token costs far more than a
/// generated one is worth waiting for (on a 2-core CPU a 64-token chunk at position 1,500 took
/// ~15 decode steps' time), so while sequences generate, the chunk is what fits in
/// `(slowdown − 1)` decode-only steps; with none generating, the whole budget.
#[derive(Debug)]
pub(super) struct Pacer {
    max: usize,
    slowdown: f64,
    /// Seconds of a step with generated tokens only.
    decode_step: Option<f64>,
    /// Seconds each prompt token adds to a step.
    per_token: Option<f64>,
}

/// Chunk used until the costs are measured.
const FIRST_CHUNK: usize = 8;

/// Moving averages of step costs. Slow ones: a single step can be 1.7× its median on a busy
/// 2-core machine, and a chunk sized from that noise swings every step's latency with it.
fn ema(old: Option<f64>, new: f64) -> Option<f64> {
    Some(old.map_or(new, |o| 0.9 * o + 0.1 * new))
}

impl Pacer {
    pub fn new(max: usize, slowdown: f64) -> Pacer {
        Pacer { max: max.max(1), slowdown: slowdown.max(1.0), decode_step: None, per_token: None }
    }

    /// Prompt tokens for the next step, given how many sequences are generating.
    pub fn budget(&self, generating: usize) -> usize {
        if generating == 0 {
            return self.max;
        }
        match (self.decode_step, self.per_token) {
            (Some(step), Some(cost)) if cost > 0.0 => {
                let fits = (self.slowdown - 1.0) * step / cost;
                (fits.floor() as usize).clamp(1, self.max)
            }
            _ => FIRST_CHUNK.min(self.max),
        }
    }

    /// What a step with `generated` decode tokens and `prompt` prompt tokens took.
    pub fn observe(&mut self, secs: f64, generated: usize, prompt: usize) {
        match (generated, prompt) {
            (0, 0) => {}
            (_, 0) => self.decode_step = ema(self.decode_step, secs),
            (0, p) => self.per_token = ema(self.per_token, secs / p as f64),
            (_, p) => {
                if let Some(step) = self.decode_step {
                    self.per_token = ema(self.per_token, (secs - step).max(0.0) / p as f64);
                }
            }
        }
    }
}

/// A sequence that gets logits in this step, to sample from after the decode.
#[derive(Debug, Clone, Copy)]
pub(super) struct SlotOutput {
    pub slot: usize,
    pub batch_index: usize,
}

/// Fills `batch` for one step; returns the outputs to sample and how many tokens each slot
/// added (to advance its `n_past` once the decode succeeds).
pub(super) fn plan(
    slots: &[Slot],
    batch: &mut Batch,
    pacer: &Pacer,
    cursor: &mut usize,
) -> Result<(Vec<SlotOutput>, Vec<usize>), BatchError> {
    batch.clear();
    let mut outputs = Vec::new();
    let mut added = vec![0; slots.len()];
    for (i, slot) in slots.iter().enumerate() {
        let Some(job) = &slot.job else { continue };
        // A consumer that is behind pauses only its own sequence.
        if let (Some(token), true) = (job.pending, job.backlog.is_empty()) {
            outputs.push(SlotOutput { slot: i, batch_index: batch.len() });
            batch.add(token, job.n_past, &[slot.seq], Logits::Want)?;
            added[i] = 1;
        }
    }
    let readers: Vec<usize> = (0..slots.len())
        .map(|k| (*cursor + k) % slots.len().max(1))
        .filter(|&i| slots[i].job.as_ref().is_some_and(|j| j.prefilling()))
        .collect();
    let mut budget = pacer.budget(batch.len()).min(batch.capacity() - batch.len());
    if !readers.is_empty() && budget > 0 {
        let share = budget.div_ceil(readers.len()).max(1);
        for &i in &readers {
            let Some(job) = &slots[i].job else { continue };
            let take = share.min(budget).min(job.input.len() - job.n_past);
            if take == 0 {
                continue;
            }
            let end = job.n_past + take;
            let finishes = if end == job.input.len() { Logits::Want } else { Logits::Skip };
            if finishes == Logits::Want {
                outputs.push(SlotOutput { slot: i, batch_index: batch.len() + take - 1 });
            }
            batch.add_sequence(&job.input[job.n_past..end], job.n_past, slots[i].seq, finishes)?;
            added[i] = take;
            budget -= take;
        }
        // Next step starts with the sequence after the first one served now.
        *cursor = (readers[0] + 1) % slots.len();
    }
    Ok((outputs, added))
}
