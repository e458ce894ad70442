//! A snapshot of what the engine has done, for a server's `/metrics`.

use std::time::Duration;

use crate::generate::FinishReason;

/// Upper bounds (seconds) of the latency histogram buckets; a last, unbounded bucket follows.
pub const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A latency histogram with [`LATENCY_BUCKETS`] (cumulative counts, as Prometheus wants them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations at or below each bound of [`LATENCY_BUCKETS`], then the total count.
    pub cumulative: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of all observations, in seconds.
    pub sum: f64,
}

impl Histogram {
    pub(crate) fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        self.sum += s;
        for (i, &bound) in LATENCY_BUCKETS.iter().enumerate() {
            if s <= bound {
                self.cumulative[i] += 1;
            }
        }
        self.cumulative[LATENCY_BUCKETS.len()] += 1;
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.cumulative[LATENCY_BUCKETS.len()]
    }

    /// An upper estimate of quantile `q` (0..=1): the bound of the bucket it falls in.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * n as f64).ceil().max(1.0) as u64;
        let i = self.cumulative.iter().position(|&c| c >= rank)?;
        Some(LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY))
    }
}

/// Requests finished, by how they ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Finished {
    /// Hit `max_tokens`.
    pub length: u64,
    /// A stop string.
    pub stop: u64,
    /// End-of-generation token.
    pub eog: u64,
    /// Cancelled (explicitly or by dropping the stream).
    pub cancelled: u64,
    /// Out of context.
    pub context_full: u64,
    /// Deadline passed.
    pub deadline: u64,
    /// Failed with an error.
    pub error: u64,
}

impl Finished {
    pub(crate) fn count(&mut self, reason: Option<FinishReason>) {
        let slot = match reason {
            Some(FinishReason::Length) => &mut self.length,
            Some(FinishReason::Stop) => &mut self.stop,
            Some(FinishReason::Eog) => &mut self.eog,
            Some(FinishReason::Cancelled | FinishReason::Stalled | FinishReason::Shutdown) => &mut self.cancelled,
            Some(FinishReason::ContextFull) => &mut self.context_full,
            Some(FinishReason::Deadline) => &mut self.deadline,
            None => &mut self.error,
        };
        *slot += 1;
    }
}

/// What the host-RAM tier of the prefix cache holds and has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RamTier {
    /// Saved prefixes held.
    pub entries: usize,
    /// Bytes they take.
    pub bytes: usize,
    /// Prefixes saved (a slot's cache about to be overwritten or evicted, a preempted job's).
    pub saves: u64,
    /// Admissions that restored a saved prefix.
    pub hits: u64,
    /// Admissions that took nothing from it.
    pub misses: u64,
}

/// What the engine has done since it started, and what it is doing now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Slots (sequences) the engine runs.
    pub slots: usize,
    /// Slots serving a request now.
    pub slots_busy: usize,
    /// Most slots busy at once so far.
    pub max_slots_busy: usize,
    /// Most sequences one decode step has advanced together so far (generating, or reading a
    /// prompt chunk). Unlike [`max_slots_busy`](Self::max_slots_busy), a request that holds a
    /// slot while its consumer lags does not count: this is the batching that really happened.
    pub max_step_sequences: usize,
    /// Requests waiting for a slot.
    pub queue_depth: usize,
    /// Cells of the KV cache in use (tokens held by all sequences, idle ones' prefixes
    /// included; a prefix several sequences share counts once).
    pub kv_cells_used: usize,
    /// Cells in the KV cache.
    pub kv_cells: usize,
    /// Prompt tokens of all requests.
    pub prompt_tokens: u64,
    /// Prompt tokens found in the cache instead of decoded.
    pub cached_tokens: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Decode calls (engine steps that ran the model).
    pub decode_steps: u64,
    /// Requests accepted.
    pub requests: u64,
    /// Requests refused because the queue was full.
    pub rejected_busy: u64,
    /// Jobs taken out of their slot because the KV pool was full, to resume later.
    pub preemptions: u64,
    /// Preempted jobs that started again.
    pub resumed: u64,
    /// Images and audio clips read into sequences through the projector (again after a
    /// preemption or a prefix that stopped short of them).
    pub media_read: u64,
    /// Requests cancelled because their consumer read nothing for
    /// [`stall_timeout`](super::EngineParams::stall_timeout) (also counted as cancelled).
    pub stalled: u64,
    /// The host-RAM tier of the prefix cache.
    pub prefix_cache: RamTier,
    /// Completions finished, by reason.
    pub finished: Finished,
    /// Time from submission to the first token.
    pub time_to_first_token: Histogram,
    /// Time between consecutive tokens of one completion.
    pub inter_token_latency: Histogram,
}

#[cfg(test)]
mod tests {
    use super::Histogram;
    use std::time::Duration;

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut h = Histogram::default();
        for ms in [1, 2, 3, 40, 900] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 5);
        assert_eq!(h.quantile(0.5), Some(0.005));
        assert_eq!(h.quantile(1.0), Some(1.0));
    }
}
