//! Choosing the draft length from measured costs and acceptance.

use std::collections::VecDeque;
use std::time::Duration;

/// Picks how many tokens to draft and verify each round.
///
/// Adaptive mode measures, online: the target's time to verify `k` drafts (one batch of `k + 1`
/// tokens; a per-size table, with `t1 + slope·k` for sizes not seen yet), the drafter's time
/// per token, and the per-token acceptance probability α — the drafter's own estimate when it
/// gives one ([`Draft::acceptance`](super::Draft::acceptance), per position), otherwise the
/// observed rate. With a constant α the expected tokens per round for `k` drafts is
/// (1 − α^(k+1)) / (1 − α); it picks
/// the `k` (0 = plain decoding) with the best expected tokens per second. While plain decoding
/// wins it still drafts a short probe now and then, so a change in acceptance is noticed.
///
/// A round asks the drafter for [`budget`](Self::budget) tokens and then verifies
/// [`trim`](Self::trim) of them: for a free drafter (n-gram lookup) the decision waits until
/// the draft and its confidence are known.
///
/// A costly drafter (a draft model) must first catch up on the whole prompt, so before its
/// first draft the controller asks for [cost probes](Self::wants_cost_probe): rounds that
/// verify a placeholder token, which price a batch of two. If then even drafts that were
/// always accepted could not pay, the draft model is not run at all (until a rare probe).
#[derive(Debug, Clone)]
pub(crate) struct Controller {
    max: usize,
    fixed: Option<usize>,
    /// Seconds to verify `k` drafts, by `k` (index 0 = a plain single-token decode): the
    /// median of the recent samples, which a single stall cannot move.
    verify: Vec<Option<f64>>,
    samples: Vec<VecDeque<f64>>,
    /// Round in which each size was last measured.
    measured_at: Vec<usize>,
    rounds: usize,
    /// Extra seconds per additional token in a target batch, for sizes not measured yet (see
    /// [`fit_slope`](Self::fit_slope)).
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
    /// Round from which cost probes may run again.
    probe_due: usize,
    /// The drafter's own cost per token, kept for the first measured draft: that round also
    /// catches the drafter up on the whole prompt, a one-time cost that would otherwise make
    /// drafting look dear and be backed off from.
    first_draft_cost: Option<f64>,
}

/// What the draft-length controller has measured, for display and tuning
/// ([`SpeculativeDecoder::report`](super::SpeculativeDecoder::report)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ControllerReport {
    /// Longest draft it may choose.
    pub max_draft: usize,
    /// The draft length when it is fixed rather than adaptive.
    pub fixed: Option<usize>,
    /// Estimated seconds to verify `k` drafts, by `k` (index 0: a plain decode); `None` until
    /// something was measured.
    pub verify_cost: Vec<Option<f64>>,
    /// Measured seconds per drafted token.
    pub draft_cost: Option<f64>,
    /// Observed share of drafted tokens accepted (decayed, starting from 1 of 2).
    pub acceptance: f64,
}

const DECAY: f64 = 0.9;
/// Longest draft a controller plans for; longer requests are clamped. Its tables hold one entry
/// per length, and acceptance decays geometrically, so drafts this long never pay.
pub const MAX_DRAFT: usize = 1024;
/// Samples per size kept for the median.
const SAMPLES: usize = 5;
/// With a confident draft, the full length is re-measured when its cost is this many rounds old:
/// sizes that are never chosen would otherwise never be measured again.
const REMEASURE_AFTER: usize = 24;
const CONFIDENT: f64 = 0.9;
const PROBE_FIRST: usize = 16;
const PROBE_MAX: usize = 512;
const PAY_MARGIN: f64 = 1.1;
/// Plain steps before the first cost probe, and cost probes before a costly drafter is run.
const PROBE_AFTER: usize = 3;
const PROBES: usize = 3;

fn ema(old: Option<f64>, new: f64) -> Option<f64> {
    Some(old.map_or(new, |o| 0.8 * o + 0.2 * new))
}

impl Controller {
    /// Adaptive, drafting at most `max` tokens (clamped to [`MAX_DRAFT`]).
    pub(crate) fn adaptive(max: usize) -> Self {
        let max = max.min(MAX_DRAFT);
        // Sizes 0 and 1 always have a slot: cost probes verify two tokens even when `max` is 0.
        let sizes = max.max(1) + 1;
        Controller {
            max,
            fixed: None,
            verify: vec![None; sizes],
            samples: vec![VecDeque::new(); sizes],
            measured_at: vec![0; sizes],
            rounds: 0,
            slope: None,
            draft_cost: None,
            accepted: 1.0,
            rejected: 1.0,
            idle: 0,
            probe_every: PROBE_FIRST,
            probe_due: 0,
            first_draft_cost: None,
        }
    }

    /// Always drafts `k` tokens (fewer only when the drafter has fewer; clamped to
    /// [`MAX_DRAFT`]).
    pub(crate) fn fixed(k: usize) -> Self {
        let k = k.min(MAX_DRAFT);
        Controller { fixed: Some(k), ..Controller::adaptive(k) }
    }

    /// Largest draft length.
    pub(crate) fn max_draft(&self) -> usize {
        self.max
    }

    /// What it has measured so far.
    pub(crate) fn report(&self) -> ControllerReport {
        ControllerReport {
            max_draft: self.max,
            fixed: self.fixed,
            verify_cost: (0..=self.max).map(|k| self.verify_cost(k)).collect(),
            draft_cost: self.draft_cost,
            acceptance: self.alpha(),
        }
    }

    /// Observed per-token acceptance probability.
    pub(crate) fn alpha(&self) -> f64 {
        self.accepted / (self.accepted + self.rejected)
    }

    /// Estimated seconds to verify `k` drafts: measured, or interpolated between the nearest
    /// measured sizes (a batch's cost per token falls with its size, so a straight line from
    /// small sizes would overcharge long drafts), or extrapolated with the fitted slope.
    ///
    /// Two facts bound the estimate, so one noisy measurement cannot rule a size out for good
    /// (a size that is never chosen is never measured again): a batch costs no more than a
    /// larger one, and no more than decoding its tokens one by one.
    pub(crate) fn verify_cost(&self, k: usize) -> Option<f64> {
        let t1 = self.verify.first().copied().flatten()?;
        let raw = self.raw_cost(k)?;
        let larger =
            (k.saturating_add(1)..self.verify.len()).filter_map(|j| self.verify[j]).fold(f64::INFINITY, f64::min);
        Some(raw.min(larger).min(t1 * (k as f64 + 1.0)).max(t1))
    }

    fn raw_cost(&self, k: usize) -> Option<f64> {
        if let Some(t) = self.verify.get(k).copied().flatten() {
            return Some(t);
        }
        let below = (0..k.min(self.verify.len())).rev().find_map(|i| Some((i, self.verify[i]?)));
        let above = (k.saturating_add(1)..self.verify.len()).find_map(|i| Some((i, self.verify[i]?)));
        match (below, above) {
            (Some((i, ti)), Some((j, tj))) => Some(ti + (tj - ti) * (k - i) as f64 / (j - i) as f64),
            (Some((i, ti)), None) => Some(ti + self.slope? * (k - i) as f64),
            _ => None,
        }
    }

    /// Expected tokens per second with `k` drafts, where draft `i` is accepted with
    /// probability `acceptance(i)` once those before it were, charging `draft_cost` seconds per
    /// drafted token.
    fn rate_at(&self, k: usize, draft_cost: f64, acceptance: &dyn Fn(usize) -> f64) -> Option<f64> {
        // The verified token always counts; each draft counts if it and all before it pass.
        let (mut tokens, mut reach) = (1.0, 1.0);
        for i in 0..k {
            reach *= acceptance(i).clamp(0.0, 1.0);
            tokens += reach;
        }
        Some(tokens / (self.verify_cost(k)? + draft_cost * k as f64))
    }

    fn best(&self, up_to: usize, draft_cost: f64, acceptance: &dyn Fn(usize) -> f64) -> usize {
        let rate = |k| self.rate_at(k, draft_cost, acceptance).unwrap_or(0.0);
        (0..=up_to).max_by(|&a, &b| rate(a).total_cmp(&rate(b))).unwrap_or(0)
    }

    /// Whether the next round should verify a placeholder draft of one token instead of asking
    /// the drafter: the drafter is costly (`draft_cost` seconds per token, known before it
    /// drafts) and no batch has been priced yet.
    pub(crate) fn wants_cost_probe(&self, draft_cost: Option<f64>) -> bool {
        self.fixed.is_none()
            && self.max > 0
            && draft_cost.is_some_and(|c| c > 0.0)
            && self.draft_cost.is_none()
            && self.samples[0].len() >= PROBE_AFTER
            && self.samples[1].len() < PROBES
            && self.rounds >= self.probe_due
    }

    /// Whether some draft length would beat plain decoding by [`PAY_MARGIN`] even if every
    /// draft were accepted; if not, probing for a better acceptance rate cannot change the
    /// decision (real drafts are never all accepted, and the estimates are optimistic: a slope
    /// measured on small batches, a draft model timed on a short context).
    fn could_pay(&self, draft_cost: f64) -> bool {
        let plain = self.rate_at(0, draft_cost, &|_| 1.0).unwrap_or(0.0);
        (1..=self.max).any(|k| self.rate_at(k, draft_cost, &|_| 1.0).unwrap_or(f64::INFINITY) > PAY_MARGIN * plain)
    }

    /// Turns a "plain decoding is best" verdict into an occasional short probe.
    fn maybe_probe(&mut self, best: usize, draft_cost: f64) -> usize {
        if best > 0 {
            self.idle = 0;
            self.probe_every = PROBE_FIRST;
            return best;
        }
        self.idle += 1;
        // Costs alone rule drafting out: probe only rarely, to refresh them.
        let every = if self.could_pay(draft_cost) { self.probe_every } else { PROBE_MAX };
        if self.idle >= every {
            self.idle = 0;
            self.probe_every = (self.probe_every * 2).min(PROBE_MAX);
            return 2.min(self.max);
        }
        0
    }

    /// How many tokens to ask the drafter for this round, given its cost per token if known.
    pub(crate) fn budget(&mut self, draft_cost: Option<f64>) -> usize {
        if let Some(k) = self.fixed {
            return k;
        }
        // Measure first: a plain step for t1, then a full draft for the slope and costs. A
        // costly drafter waits for a steadier t1 and for cost probes to price a batch.
        let unmeasured = draft_cost.is_some_and(|c| c > 0.0) && self.draft_cost.is_none();
        if self.verify[0].is_none() || (unmeasured && self.slope.is_none()) {
            return 0;
        }
        // What drafting really costs is what rounds measured (it includes catching up on tokens
        // decoded while not drafting); the drafter's own figure serves until then.
        let cost = if draft_cost == Some(0.0) { draft_cost } else { self.draft_cost.or(draft_cost) };
        let Some(cost) = cost.filter(|_| self.slope.is_some()) else {
            return self.max;
        };
        if cost == 0.0 {
            // Free drafts: draft everything, decide in `trim` with the draft's confidence.
            return self.max;
        }
        if unmeasured {
            // Decided once per set of probes, while their costs and t1 are contemporary (the
            // machine's speed drifts): measure a full draft if they leave room for drafting
            // to pay, else decode plainly and probe again much later.
            if self.could_pay(cost) {
                self.first_draft_cost = Some(cost);
                return self.max;
            }
            self.probe_due = self.rounds + PROBE_MAX;
            self.samples[1].clear();
            self.verify[1] = None;
            self.slope = self.fit_slope();
            return 0;
        }
        let alpha = self.alpha();
        let best = self.best(self.max, cost, &|_| alpha);
        self.maybe_probe(best, cost)
    }

    /// How many of the `available` drafted tokens to verify; `acceptance` is the drafter's own
    /// estimate for each token (see [`Draft::acceptance`](super::Draft::acceptance)), if any.
    pub(crate) fn trim(&mut self, available: usize, acceptance: &[f64]) -> usize {
        let available = available.min(self.max);
        if self.fixed.is_some() || self.slope.is_none() || acceptance.is_empty() {
            return available; // `budget` already chose with the observed rate
        }
        let last = acceptance[acceptance.len() - 1];
        let best = self.best(available, 0.0, &|i| acceptance.get(i).copied().unwrap_or(last));
        if acceptance[0] >= CONFIDENT {
            // Batch costs are irregular (tiling): measure the sizes 2, 4, 8, 16, ... once, so
            // interpolation runs between real points.
            if let Some(k) =
                (1..).map(|b| (1usize << b) - 1).take_while(|&k| k <= available).find(|&k| self.verify[k].is_none())
            {
                return k;
            }
            let stale = self.rounds.saturating_sub(self.measured_at[available.min(self.max)]) >= REMEASURE_AFTER;
            if best < available && stale {
                return available;
            }
        }
        self.maybe_probe(best, 0.0).min(available)
    }

    /// Records a round: `k` drafted, `accepted` of them accepted, and the times spent.
    pub(crate) fn observe(&mut self, k: usize, accepted: usize, draft: Duration, verify: Duration) {
        self.observe_verify(k, verify);
        if k == 0 {
            return;
        }
        self.draft_cost = match self.first_draft_cost.take() {
            Some(own) => Some(own),
            None => ema(self.draft_cost, draft.as_secs_f64() / k as f64),
        };
        self.accepted = self.accepted * DECAY + accepted as f64;
        self.rejected = self.rejected * DECAY + f64::from(u8::from(accepted < k));
    }

    /// Records what verifying `k` tokens cost, without counting them as drafts (a
    /// [cost probe](Self::wants_cost_probe)).
    pub(crate) fn observe_verify(&mut self, k: usize, verify: Duration) {
        let verify = verify.as_secs_f64();
        self.rounds += 1;
        if let Some(samples) = self.samples.get_mut(k) {
            if samples.len() == SAMPLES {
                samples.pop_front();
            }
            samples.push_back(verify);
            let mut sorted: Vec<f64> = samples.iter().copied().collect();
            sorted.sort_by(f64::total_cmp);
            self.verify[k] = Some(sorted[sorted.len() / 2]);
            self.measured_at[k] = self.rounds;
            self.slope = self.fit_slope();
        }
    }

    /// The slope: the median over the measured sizes (each itself a median) of the extra
    /// seconds per token beyond a single decode, so one noisy round cannot skew it.
    fn fit_slope(&self) -> Option<f64> {
        let t1 = self.verify[0]?;
        let mut per: Vec<f64> = self
            .verify
            .iter()
            .enumerate()
            .skip(1)
            .filter_map(|(k, t)| Some(((*t)? - t1).max(0.0) / k as f64))
            .collect();
        if per.is_empty() {
            return None;
        }
        per.sort_by(f64::total_cmp);
        Some(per[per.len() / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "1024-entry tables, priced size by size: minutes under Miri")]
    fn controllers_clamp_huge_draft_lengths() {
        for mut c in [Controller::adaptive(usize::MAX), Controller::fixed(usize::MAX), Controller::adaptive(0)] {
            assert!(c.max_draft() <= MAX_DRAFT);
            assert_eq!(c.verify_cost(usize::MAX), None);
            c.observe(0, 0, Duration::ZERO, Duration::from_millis(10));
            c.observe_verify(1, Duration::from_millis(12));
            assert!(c.verify_cost(usize::MAX).is_some_and(f64::is_finite));
            assert!(c.trim(usize::MAX, &[0.9, 0.8]) <= c.max_draft().max(1));
            let _ = c.budget(Some(0.001));
        }
        let report = Controller::fixed(4).report();
        assert_eq!((report.max_draft, report.fixed, report.verify_cost.len()), (4, Some(4), 5));
    }

    /// Feeds the controller rounds whose verify time follows `cost(k)` (seconds) and whose
    /// drafts are accepted with probability `alpha` (deterministically: the expected count).
    fn settle(cost: impl Fn(usize) -> f64, alpha: f64, acceptance: &[f64]) -> usize {
        let mut c = Controller::adaptive(8);
        let mut k = 0;
        for _ in 0..200 {
            let budget = c.budget(Some(0.0));
            k = if budget == 0 { 0 } else { c.trim(budget, acceptance) };
            let accepted = (0..k).take_while(|&i| alpha.powi(i as i32 + 1) > 0.5).count();
            c.observe(k, accepted, Duration::ZERO, Duration::from_secs_f64(cost(k)));
        }
        k
    }

    #[test]
    fn backs_off_to_plain_decoding_when_verification_costs_as_much_as_decoding() {
        // A batch of k + 1 costs k + 1 single decodes: no draft length can pay.
        assert_eq!(settle(|k| 0.01 * (k + 1) as f64, 0.9, &[0.9; 8]), 0);
    }

    #[test]
    fn drafts_long_when_verification_is_cheap_and_drafts_are_good() {
        // A GPU-like curve: a batch costs barely more than one token.
        assert_eq!(settle(|k| 0.01 + 0.0005 * k as f64, 0.99, &[0.99; 8]), 8);
    }

    /// Rounds of a controller whose drafter costs `draft_cost` seconds per token: what it asks
    /// for in each (`None` = a cost probe), verify times following `cost(k)`.
    fn costly_rounds(cost: impl Fn(usize) -> f64, draft_cost: f64, rounds: usize) -> Vec<Option<usize>> {
        costly_rounds_with(cost, draft_cost, 0.0, rounds)
    }

    /// As [`costly_rounds`], the first real draft also taking `catch_up` seconds (the drafter
    /// reading the prompt).
    fn costly_rounds_with(
        cost: impl Fn(usize) -> f64,
        draft_cost: f64,
        mut catch_up: f64,
        rounds: usize,
    ) -> Vec<Option<usize>> {
        let mut c = Controller::adaptive(8);
        (0..rounds)
            .map(|_| {
                if c.wants_cost_probe(Some(draft_cost)) {
                    c.observe_verify(1, Duration::from_secs_f64(cost(1)));
                    return None;
                }
                let k = c.budget(Some(draft_cost));
                let drafting = if k > 0 { draft_cost * k as f64 + std::mem::take(&mut catch_up) } else { 0.0 };
                c.observe(k, k, Duration::from_secs_f64(drafting), Duration::from_secs_f64(cost(k)));
                Some(k)
            })
            .collect()
    }

    #[test]
    fn reading_the_prompt_once_does_not_make_a_draft_model_look_dear() {
        // GPU-like costs; the first draft also reads a long prompt (a second, 100 decodes' worth).
        let asked = costly_rounds_with(|k| 0.01 + 0.0005 * k as f64, 0.001, 1.0, 15);
        assert_eq!(asked[6], Some(8), "{asked:?}");
        assert!(asked[7..].iter().all(|&k| k == Some(8)), "{asked:?}");
    }

    #[test]
    fn a_costly_drafter_is_never_run_when_a_probe_shows_it_cannot_pay() {
        // CPU-like: a batch of two costs 1.7 decodes, a draft token half a decode.
        let asked = costly_rounds(|k| 0.05 * (1.0 + 0.7 * k as f64), 0.025, 100);
        assert_eq!(asked[..6], [Some(0), Some(0), Some(0), None, None, None]);
        assert!(asked[6..].iter().all(|&k| k == Some(0)), "{asked:?}");
    }

    #[test]
    fn a_costly_drafter_drafts_in_full_when_verification_is_cheap() {
        // GPU-like: a batch costs barely more than one token, drafts a tenth of a decode.
        let asked = costly_rounds(|k| 0.01 + 0.0005 * k as f64, 0.001, 15);
        assert_eq!(asked[..6], [Some(0), Some(0), Some(0), None, None, None]);
        assert!(asked[6].is_some_and(|k| k > 0), "{asked:?}");
        assert_eq!(asked.last(), Some(&Some(8)), "{asked:?}");
    }

    #[test]
    fn fixed_mode_never_adapts() {
        let mut c = Controller::fixed(5);
        c.observe(5, 0, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(c.budget(None), 5);
        assert_eq!(c.trim(5, &[0.0]), 5);
    }
}
