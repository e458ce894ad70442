//! What goes into each engine step: one token for every generating sequence first, then a
//! prefill budget shared round-robin by the sequences still reading their prompts (chunked
//! prefill). A long prompt therefore delays running streams by one chunk per step, never by its
//! whole prefill, and the [`Pacer`] sizes that chunk from measured costs so a step that reads
//! prompts takes at most a set multiple of a decode-only step.

use super::slots::Slot;
use crate::error::BatchError;
use crate::{Batch, Logits};

/// Sizes the prefill budget from what steps cost. A prompt token costs far more than a
/// generated one is worth waiting for, so while established sequences generate, the chunk is
/// what fits in `(slowdown − 1)` decode-only steps; with none generating, or only sequences
/// that have just started (requests that arrived together), the whole budget.
///
/// What that trades, on a 2-core CPU (`cargo bench --bench engine -- --only chunks --requantize
/// q4_0`, SmolLM2 Q4_0, 3 sequences 300 tokens in, a prompt 750 in): their decode-only step
/// took 22.6 ms; each prompt token beside them added 5.1 ms in chunks of 8, 4.5 in 32, 3.7 in
/// 64 and 2.9–3.0 from 256 on. A small model on a CPU is compute-bound from the first token,
/// so a chunk costs nearly what its tokens cost alone and no chunk size is free: a step held
/// to 3× a decode-only one reads ~9 prompt tokens, a third of the rate of the 512-token
/// batches llama-server reads a prompt in while its streams wait.
#[derive(Debug)]
pub(super) struct Pacer {
    max: usize,
    slowdown: f64,
    /// Seconds of a step with generated tokens only.
    decode_step: Option<f64>,
    /// Seconds each prompt token adds to a step.
    per_token: Option<f64>,
    /// Steps since the last decode-only one.
    since_decode_only: usize,
}

/// Chunk used until the costs are measured.
const FIRST_CHUNK: usize = 8;

/// A sequence that has generated fewer tokens than this has just started, most likely with
/// others that arrived with it: reading their prompts whole, as llama-server does, gets every
/// one of them its first token sooner, at the cost of a few slow first steps for the earliest.
/// Eight 100-token prompts at once (`vs.py` k8, SmolLM2 Q4_0): paced, their median first
/// token came at 3.3 s against llama-server's 1.3 s, and the aggregate was 0.82× its; read
/// whole, 1.4 s and 1.16×.
pub(super) const ESTABLISHED: usize = 16;

/// While a prompt is read beside generating sequences, every step carries prompt tokens, and a
/// decode-only step's cost (which grows with the sequences' contexts) is not seen again: left
/// stale, the growth is blamed on the prompt tokens and the chunk shrinks to one token a step
/// (a 1,500-token prompt beside three 1,024-token streams: 86 s to its first token). So every
/// this many steps one is decode-only, to measure it again.
const REMEASURE_EVERY: usize = 16;

/// Moving averages of step costs. Slow ones: a single step can be 1.7× its median on a busy
/// 2-core machine, and a chunk sized from that noise swings every step's latency with it.
/// `weight` is the new value's share.
fn ema(old: Option<f64>, new: f64, weight: f64) -> Option<f64> {
    Some(old.map_or(new, |o| (1.0 - weight) * o + weight * new))
}

/// The usual share of a new cost in its average.
const SLOW: f64 = 0.1;
/// The share of a decode-only step measured again during a prefill: the only one in
/// [`REMEASURE_EVERY`] steps, it must move the average by more than a tenth of the way.
const REMEASURED: f64 = 0.5;

impl Pacer {
    pub fn new(max: usize, slowdown: f64) -> Pacer {
        Pacer { max: max.max(1), slowdown: slowdown.max(1.0), decode_step: None, per_token: None, since_decode_only: 0 }
    }

    /// Prompt tokens for the next step, given how many sequences are generating and whether
    /// any of them is established (has generated [`ESTABLISHED`] tokens).
    pub fn budget(&self, generating: usize, established: bool) -> usize {
        if generating == 0 || !established {
            return self.max;
        }
        if self.since_decode_only >= REMEASURE_EVERY {
            return 0;
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
        let remeasured = prompt == 0 && self.since_decode_only >= REMEASURE_EVERY;
        self.since_decode_only = if prompt == 0 { 0 } else { self.since_decode_only + 1 };
        match (generated, prompt) {
            (0, 0) => {}
            (_, 0) => self.decode_step = ema(self.decode_step, secs, if remeasured { REMEASURED } else { SLOW }),
            (0, p) => self.per_token = ema(self.per_token, secs / p as f64, SLOW),
            (_, p) => {
                if let Some(step) = self.decode_step {
                    self.per_token = ema(self.per_token, (secs - step).max(0.0) / p as f64, SLOW);
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
    let established =
        slots.iter().filter_map(|s| s.job.as_ref()).any(|j| !j.prefilling() && j.driver.generated() >= ESTABLISHED);
    let mut budget = pacer.budget(batch.len(), established).min(batch.capacity() - batch.len());
    if !readers.is_empty() && budget > 0 {
        let share = budget.div_ceil(readers.len()).max(1);
        for &i in &readers {
            let Some(job) = &slots[i].job else { continue };
            let take = share.min(budget).min(job.batchable());
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

#[cfg(test)]
mod tests {
    use super::{Pacer, REMEASURE_EVERY};

    #[test]
    fn streams_that_just_started_do_not_throttle_prompts() {
        let mut pacer = Pacer::new(256, 2.0);
        pacer.observe(0.020, 3, 0);
        pacer.observe(0.080, 3, 10);
        assert_eq!(pacer.budget(3, false), 256);
        // 20 ms decode steps, 6 ms a prompt token: one more decode step's worth is 3 tokens.
        assert_eq!(pacer.budget(3, true), 3);
        assert_eq!(pacer.budget(0, false), 256);
    }

    #[test]
    fn a_long_prefill_remeasures_the_decode_step() {
        let mut pacer = Pacer::new(256, 2.0);
        pacer.observe(0.020, 3, 0);
        pacer.observe(0.080, 3, 10);
        for _ in 1..REMEASURE_EVERY {
            assert!(pacer.budget(3, true) > 0);
            pacer.observe(0.080, 3, 10);
        }
        // Every step read prompt tokens: the next one is decode-only, and what it measures
        // (the streams' contexts grew: 40 ms) sizes the chunks after it.
        assert_eq!(pacer.budget(3, true), 0);
        pacer.observe(0.040, 3, 0);
        let chunk = pacer.budget(3, true);
        assert_eq!(chunk, 5, "one decode-only step should resize the chunk (30 ms / 6 ms)");
    }
}
