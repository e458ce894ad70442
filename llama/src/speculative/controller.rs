//! Choosing the draft length from measured costs and acceptance.

use std::time::Duration;

/// Picks how many tokens to draft each round.
///
/// Adaptive mode keeps running estimates of: the target's time for a batch of `k + 1` tokens
/// (as `t1 + slope·k`), the drafter's time per token, and the per-token acceptance probability
/// α. The expected tokens per round for draft length `k` is (1 − α^(k+1)) / (1 − α); it picks
/// the `k` (0 = plain decoding) with the best expected tokens per second. While plain decoding
/// wins it still drafts a short probe now and then, so a change in acceptance is noticed.
#[derive(Debug, Clone)]
pub struct Controller {
    max: usize,
    fixed: Option<usize>,
    /// Seconds for a single-token target decode.
    t1: Option<f64>,
    /// Extra seconds per additional token in a target batch.
    slope: Option<f64>,
    /// Seconds per drafted token.
    draft_cost: Option<f64>,
    /// Accepted and rejected draft tokens (decayed counts).
    accepted: f64,
    rejected: f64,
    /// Rounds since the last draft.
    idle: usize,
    /// Plain rounds between probes; doubles while probes keep confirming plain decoding (a
    /// probe is not free: a draft model first catches up on every token since its last draft).
    probe_every: usize,
}

const DECAY: f64 = 0.9;
const PROBE_FIRST: usize = 16;
const PROBE_MAX: usize = 512;

fn ema(old: Option<f64>, new: f64) -> Option<f64> {
    Some(old.map_or(new, |o| 0.8 * o + 0.2 * new))
}

impl Controller {
    /// Adaptive, drafting at most `max` tokens.
    pub fn adaptive(max: usize) -> Self {
        Controller {
            max,
            fixed: None,
            t1: None,
            slope: None,
            draft_cost: None,
            accepted: 1.0,
            rejected: 1.0,
            idle: 0,
            probe_every: PROBE_FIRST,
        }
    }

    /// Always drafts `k` tokens.
    pub fn fixed(k: usize) -> Self {
        Controller { fixed: Some(k), ..Controller::adaptive(k) }
    }

    /// Largest draft length.
    pub fn max_draft(&self) -> usize {
        self.max
    }

    /// Estimated per-token acceptance probability.
    pub fn alpha(&self) -> f64 {
        self.accepted / (self.accepted + self.rejected)
    }

    /// Expected tokens per second with draft length `k`, if the costs are known.
    pub fn expected_rate(&self, k: usize, draft_cost: Option<f64>) -> Option<f64> {
        self.rate_at(k, draft_cost, self.alpha().min(0.999))
    }

    fn rate_at(&self, k: usize, draft_cost: Option<f64>, alpha: f64) -> Option<f64> {
        let t1 = self.t1?;
        if k == 0 {
            return Some(1.0 / t1);
        }
        let slope = self.slope?;
        let draft = self.draft_cost.or(draft_cost)?;
        let tokens = if alpha >= 1.0 { (k + 1) as f64 } else { (1.0 - alpha.powi(k as i32 + 1)) / (1.0 - alpha) };
        Some(tokens / (t1 + slope * k as f64 + draft * k as f64))
    }

    /// Whether some draft length would beat plain decoding even if every draft were accepted;
    /// if not, probing for a better acceptance rate cannot change the decision.
    fn could_pay(&self, draft_cost: Option<f64>) -> bool {
        let plain = self.rate_at(0, draft_cost, 1.0).unwrap_or(0.0);
        (1..=self.max).any(|k| self.rate_at(k, draft_cost, 1.0).unwrap_or(f64::INFINITY) > plain)
    }

    /// The draft length for the next round.
    pub fn choose(&mut self, draft_cost: Option<f64>) -> usize {
        if let Some(k) = self.fixed {
            return k;
        }
        // Measure first: a plain step for t1, then a full draft for the slope and costs.
        if self.t1.is_none() {
            return 0;
        }
        if self.slope.is_none() || (self.draft_cost.is_none() && draft_cost.is_none()) {
            return self.max;
        }
        let best = (0..=self.max)
            .max_by(|&a, &b| {
                let (ra, rb) = (self.expected_rate(a, draft_cost), self.expected_rate(b, draft_cost));
                ra.unwrap_or(0.0).total_cmp(&rb.unwrap_or(0.0))
            })
            .unwrap_or(0);
        if best == 0 {
            self.idle += 1;
            // Costs alone rule drafting out: probe only rarely, to refresh them.
            let every = if self.could_pay(draft_cost) { self.probe_every } else { PROBE_MAX };
            if self.idle >= every {
                self.idle = 0;
                self.probe_every = (self.probe_every * 2).min(PROBE_MAX);
                return 2.min(self.max);
            }
        } else {
            self.idle = 0;
            self.probe_every = PROBE_FIRST;
        }
        best
    }

    /// Records a round: `k` drafted, `accepted` of them accepted, and the times spent.
    pub fn observe(&mut self, k: usize, accepted: usize, draft: Duration, verify: Duration) {
        let verify = verify.as_secs_f64();
        if k == 0 {
            self.t1 = ema(self.t1, verify);
            return;
        }
        if let Some(t1) = self.t1 {
            self.slope = ema(self.slope, ((verify - t1) / k as f64).max(0.0));
        }
        self.draft_cost = ema(self.draft_cost, draft.as_secs_f64() / k as f64);
        self.accepted = self.accepted * DECAY + accepted as f64;
        self.rejected = self.rejected * DECAY + f64::from(u8::from(accepted < k));
    }
}
