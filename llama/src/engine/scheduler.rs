//! What goes into each engine step: one token for every generating sequence first, then a
//! bounded prefill budget shared round-robin by the sequences still reading their prompts
//! (chunked prefill). A long prompt therefore delays running streams by at most one chunk per
//! step, never by its whole prefill.

use super::slots::Slot;
use crate::error::BatchError;
use crate::Batch;

/// A sequence that gets logits in this step, to sample from after the decode.
#[derive(Debug, Clone, Copy)]
pub(super) struct Output {
    pub slot: usize,
    pub batch_index: i32,
}

/// Fills `batch` for one step; returns the outputs to sample and how many tokens each slot
/// added (to advance its `n_past` once the decode succeeds).
pub(super) fn plan(
    slots: &[Slot],
    batch: &mut Batch,
    prefill_budget: usize,
    cursor: &mut usize,
) -> Result<(Vec<Output>, Vec<usize>), BatchError> {
    batch.clear();
    let mut outputs = Vec::new();
    let mut added = vec![0; slots.len()];
    for (i, slot) in slots.iter().enumerate() {
        let Some(job) = &slot.job else { continue };
        // A consumer that is behind pauses only its own sequence.
        if let (Some(token), true) = (job.pending, job.backlog.is_empty()) {
            outputs.push(Output { slot: i, batch_index: batch.len() as i32 });
            batch.add(token, job.n_past as i32, &[slot.seq], true)?;
            added[i] = 1;
        }
    }
    let readers: Vec<usize> = (0..slots.len())
        .map(|k| (*cursor + k) % slots.len().max(1))
        .filter(|&i| slots[i].job.as_ref().is_some_and(|j| j.prefilling()))
        .collect();
    let mut budget = prefill_budget.min(batch.capacity() - batch.len());
    if !readers.is_empty() && budget > 0 {
        let share = budget.div_ceil(readers.len()).max(1);
        for &i in &readers {
            let Some(job) = &slots[i].job else { continue };
            let take = share.min(budget).min(job.prompt.len() - job.n_past);
            if take == 0 {
                continue;
            }
            let end = job.n_past + take;
            let finishes = end == job.prompt.len();
            if finishes {
                outputs.push(Output { slot: i, batch_index: (batch.len() + take - 1) as i32 });
            }
            batch.add_sequence(&job.prompt[job.n_past..end], job.n_past as i32, slots[i].seq, finishes)?;
            added[i] = take;
            budget -= take;
        }
        // Next step starts with the sequence after the first one served now.
        *cursor = (readers[0] + 1) % slots.len();
    }
    Ok((outputs, added))
}
