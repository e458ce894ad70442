//! Choosing the draft length from measured costs and acceptance: a small state machine.
//!
//! ```text
//!            t1 priced                      probes done, drafting could pay
//!  WarmUp ─────────────────▶ Drafting ◀──────────────────────────── CostProbes
//!    │ costly drafter,          │  ▲                                   │  ▲
//!    │ WARMUP_PLAIN_ROUNDS      │  │ a draft length beats               │  │ REPRICE_AFTER
//!    └──────────────────────────┼──┼─ plain decoding again   even perfect │  │ rounds later
//!              ▶ CostProbes     ▼  │                    drafts cannot pay ▼  │
//!                            BackedOff ◀────────────────────────────────────┘
//! ```
//!
//! Each round the decoder asks [`Controller::plan`] what to do (decode plainly, run a cost probe,
//! or ask the drafter for `k` tokens), narrows a draft with [`Controller::choose`] once the
//! drafter's confidence is known, and reports what happened with [`Controller::record`]. Every
//! change of [`Phase`] happens in those three calls.

use std::collections::VecDeque;
use std::time::Duration;

use super::tally::Tally;

/// Longest draft a controller plans for; longer requests are clamped. Its tables hold one entry
/// per length, and acceptance decays geometrically, so drafts this long never pay.
pub const MAX_DRAFT: usize = 1024;

// Tuning. Each says what it trades and what chose it; "pinned" names the unit test below whose
// synthetic cost curve fails if the value is moved far enough to change the behaviour it guards.
// "Swept" figures: `python3 benches/speculative_tuning.py FILE NAME chosen,half,double` (the
// speculative bench built once per value, the binaries alternated round by round on this 2-core
// CPU: 5 rounds of the n-gram rename task on SmolLM2 Q4_0 and Q4_1, 3 of the Qwen-Coder pair),
// medians as speed relative to the chosen value.
// Single rounds of one binary spread 0.8–1.2× on this machine, so medians within ±8% are noise.

/// Plain rounds before the first cost probe: a single decode's cost settles after the first
/// few (cache warm-up), and probes priced against an unsettled one flipped the verdict. Chosen
/// with the cost probes (issue 5, session 3): one traced run had the single-decode time move
/// from 49 to 65 ms while the probes' cost stayed put. Pinned by
/// `a_costly_drafter_prices_a_batch_before_it_drafts`.
const WARMUP_PLAIN_ROUNDS: usize = 3;
/// Cost probes before a costly drafter is run or ruled out: enough for a median of three.
/// Before probes existed, the first round with Qwen-Coder-0.5B drafting for 1.5B cost 3–8% of a
/// 256-token run on this CPU (adaptive vs plain 0.93–1.01×); with three probes it is 0.98–1.005×
/// (`python3 benches/speculative.py --only adaptive`).
const COST_PROBES: usize = 3;
/// Rounds before a costly drafter that could not pay is priced again. A re-pricing costs three
/// probes (each a 2-token batch, 1.7–1.9 single decodes on this CPU): every 512 rounds keeps
/// that under 1% of decoding time. Pinned by `a_drafter_that_cannot_pay_is_priced_again_much_later`.
const REPRICE_AFTER: usize = 512;
/// A draft length must beat plain decoding by this factor with every draft accepted, or a
/// costly drafter is not run at all: the estimates it rests on are optimistic (a slope from
/// two-token batches, a draft model timed on a short context). Swept on the Qwen-Coder
/// 1.5B/0.5B pair (`adaptive`): 1.0 ran the draft model (acceptance 80%) at 1.02×, 1.3 never
/// did, as 1.1, at 1.04×: on this CPU the pair sits at the edge, and the margin only decides
/// whether the draft model is tried. Pinned against 0.5 by
/// `a_drafter_that_cannot_pay_is_priced_again_much_later`.
const PAY_MARGIN: f64 = 1.1;
/// Plain rounds before the first retry draft after backing off; doubles after each retry that
/// confirms plain decoding, up to [`RETRY_MAX`] (a retry is not free: a draft model first
/// catches up on every token since its last draft). Swept: 8 gave 1.00× (Q4_0) and 0.99× (Q4_1),
/// 32 gave 0.97× and 1.00× — the rename task rarely backs off. Pinned by
/// `backs_off_and_retries_at_growing_intervals`.
const RETRY_FIRST: usize = 16;
/// Longest wait between retries, and the only one when costs alone rule drafting out.
/// Pinned by `backs_off_and_retries_at_growing_intervals` (the wait it reaches) and
/// `retries_rarely_when_costs_alone_rule_drafting_out`.
const RETRY_MAX: usize = 512;
/// Tokens drafted by a retry: the shortest draft that shows acceptance beyond a first token.
const RETRY_DRAFT: usize = 2;
/// Samples per batch size kept for the median: one stall (this machine drifts ±20–30%, with
/// single rounds 0.84–1.27× their neighbours) cannot move a median of five.
const COST_SAMPLES: usize = 5;
/// With a confident draft, the full length is re-measured when its cost is this many rounds old:
/// sizes that are never chosen would otherwise never be measured again. Swept: 12 gave 1.08×
/// (Q4_0) and 1.01× (Q4_1), 48 gave 1.06× and 1.02×; both beat 24 by the same noise, so 24 stays.
const REMEASURE_AFTER: usize = 24;
/// A drafter estimate of first-token acceptance at or above this counts as confident: the
/// sizes 1, 3, 7, 15, … are then measured once each (batch costs are irregular: Qwen-Coder-1.5B
/// verifies 16 tokens for 9.67 decodes and 17 for 11.43, `cargo bench --bench verify_cost`).
/// Swept: 0.8 gave 0.99× (Q4_0) and 1.02× (Q4_1), 0.95 gave 0.96× and 1.03×.
const CONFIDENT: f64 = 0.9;
/// Weight of past rounds in the acceptance counts: about the last ten rounds matter. Hand-picked,
/// not swept.
const ACCEPTANCE_DECAY: f64 = 0.9;
/// Weight of a new round in the measured draft cost per token. Hand-picked, not swept.
const DRAFT_COST_WEIGHT: f64 = 0.2;

/// Where an adaptive controller stands ([`ControllerReport::phase`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Decoding plainly to price a single decode.
    WarmUp,
    /// Verifying a placeholder draft of one token (the last token again) to price a batch of two
    /// before a costly drafter (a draft model) is run at all.
    CostProbes,
    /// The last decision chose a draft length above zero.
    Drafting,
    /// Plain decoding wins at the measured costs and acceptance. A short retry draft now and
    /// then notices a change in acceptance; a costly drafter that was never run is priced again
    /// much later instead.
    BackedOff,
    /// The draft length is fixed: nothing is decided.
    Fixed,
}

/// What the draft-length controller has measured, for display and tuning
/// ([`SpeculativeDecoder::report`](super::SpeculativeDecoder::report)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ControllerReport {
    /// Where it stands.
    pub phase: Phase,
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

/// What a round does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Decode the last token alone.
    Plain,
    /// Verify the last token again as a one-token draft: prices a batch of two without running
    /// the drafter (if the placeholder happens to be right, it counts).
    CostProbe,
    /// Ask the drafter for up to this many tokens, then [`Controller::choose`] how many to verify.
    Draft(usize),
}

/// What verifying a batch costs, by draft length `k` (a batch of `k + 1` tokens; `k = 0` is a
/// plain decode).
#[derive(Debug, Clone)]
struct CostTable {
    /// The median of each size's recent samples.
    median: Vec<Option<f64>>,
    samples: Vec<VecDeque<f64>>,
    /// Round in which each size was last measured.
    measured_at: Vec<usize>,
    /// Extra seconds per additional token in a batch, for sizes not measured yet (see
    /// [`fit_slope`](Self::fit_slope)).
    slope: Option<f64>,
}

impl CostTable {
    fn new(sizes: usize) -> Self {
        CostTable {
            median: vec![None; sizes],
            samples: vec![VecDeque::new(); sizes],
            measured_at: vec![0; sizes],
            slope: None,
        }
    }

    fn record(&mut self, k: usize, seconds: f64, round: usize) {
        let Some(samples) = self.samples.get_mut(k) else { return };
        if samples.len() == COST_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(seconds);
        let mut sorted: Vec<f64> = samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        self.median[k] = Some(sorted[sorted.len() / 2]);
        self.measured_at[k] = round;
        self.slope = self.fit_slope();
    }

    /// Drops what size `k` measured.
    fn forget(&mut self, k: usize) {
        self.samples[k].clear();
        self.median[k] = None;
        self.slope = self.fit_slope();
    }

    fn samples(&self, k: usize) -> usize {
        self.samples.get(k).map_or(0, VecDeque::len)
    }

    fn is_measured(&self, k: usize) -> bool {
        self.median.get(k).copied().flatten().is_some()
    }

    /// Rounds since size `k` was last measured.
    fn age(&self, k: usize, round: usize) -> usize {
        round.saturating_sub(self.measured_at[k])
    }

    /// A single decode's cost.
    fn single(&self) -> Option<f64> {
        self.median[0]
    }

    /// Estimated seconds to verify `k` drafts: measured, or interpolated between the nearest
    /// measured sizes (a batch's cost per token falls with its size, so a straight line from
    /// small sizes would overcharge long drafts), or extrapolated with the fitted slope.
    ///
    /// Two facts bound the estimate, so one noisy measurement cannot rule a size out for good
    /// (a size that is never chosen is never measured again): a batch costs no more than a
    /// larger one, and no more than decoding its tokens one by one.
    fn estimate(&self, k: usize) -> Option<f64> {
        let t1 = self.single()?;
        let raw = self.interpolate(k)?;
        let larger =
            (k.saturating_add(1)..self.median.len()).filter_map(|j| self.median[j]).fold(f64::INFINITY, f64::min);
        Some(raw.min(larger).min(t1 * (k as f64 + 1.0)).max(t1))
    }

    fn interpolate(&self, k: usize) -> Option<f64> {
        if let Some(t) = self.median.get(k).copied().flatten() {
            return Some(t);
        }
        let below = (0..k.min(self.median.len())).rev().find_map(|i| Some((i, self.median[i]?)));
        let above = (k.saturating_add(1)..self.median.len()).find_map(|i| Some((i, self.median[i]?)));
        match (below, above) {
            (Some((i, ti)), Some((j, tj))) => Some(ti + (tj - ti) * (k - i) as f64 / (j - i) as f64),
            (Some((i, ti)), None) => Some(ti + self.slope? * (k - i) as f64),
            _ => None,
        }
    }

    /// The median over the measured sizes (each itself a median) of the extra seconds per token
    /// beyond a single decode, so one noisy round cannot skew it.
    fn fit_slope(&self) -> Option<f64> {
        let t1 = self.single()?;
        let mut per: Vec<f64> = (self.median.iter().enumerate().skip(1))
            .filter_map(|(k, t)| Some(((*t)? - t1).max(0.0) / k as f64))
            .collect();
        if per.is_empty() {
            return None;
        }
        per.sort_by(f64::total_cmp);
        Some(per[per.len() / 2])
    }
}

/// When a backed-off controller drafts again to see whether acceptance changed.
#[derive(Debug, Clone, Copy)]
struct Retry {
    /// Plain rounds since the last draft.
    idle: usize,
    /// Plain rounds to wait; doubles while retries keep confirming plain decoding.
    every: usize,
}

/// Picks how many tokens to draft and verify each round.
///
/// Adaptive mode measures, online: the target's time to verify `k` drafts (a [`CostTable`]),
/// the drafter's time per token, and the per-token acceptance probability α — the drafter's own
/// estimate when it gives one ([`Draft::acceptance`](super::Draft::acceptance), per position),
/// otherwise the observed rate. With a constant α the expected tokens per round for `k` drafts
/// is (1 − α^(k+1)) / (1 − α); it picks the `k` (0 = plain decoding) with the best expected
/// tokens per second.
#[derive(Debug, Clone)]
pub(crate) struct Controller {
    max: usize,
    fixed: Option<usize>,
    phase: Phase,
    costs: CostTable,
    rounds: usize,
    /// Measured seconds per drafted token (catching up on tokens decoded while not drafting
    /// included).
    draft_cost: Option<f64>,
    /// The drafter's own cost per token, kept for the first measured draft: that round also
    /// catches the drafter up on the whole prompt, a one-time cost that would otherwise make
    /// drafting look dear and be backed off from.
    first_draft_cost: Option<f64>,
    tally: Tally,
    retry: Retry,
    /// Round from which a costly drafter that could not pay is priced again.
    reprice_at: usize,
}

impl Controller {
    /// Adaptive, drafting at most `max` tokens (clamped to [`MAX_DRAFT`]).
    pub(crate) fn adaptive(max: usize) -> Self {
        let max = max.min(MAX_DRAFT);
        Controller {
            max,
            fixed: None,
            phase: Phase::WarmUp,
            // Sizes 0 and 1 always have a slot: cost probes verify two tokens even when `max` is 0.
            costs: CostTable::new(max.max(1) + 1),
            rounds: 0,
            draft_cost: None,
            first_draft_cost: None,
            tally: Tally::new(1.0, 1.0),
            retry: Retry { idle: 0, every: RETRY_FIRST },
            reprice_at: 0,
        }
    }

    /// Always drafts `k` tokens (fewer only when the drafter has fewer; clamped to
    /// [`MAX_DRAFT`]).
    pub(crate) fn fixed(k: usize) -> Self {
        let k = k.min(MAX_DRAFT);
        Controller { fixed: Some(k), phase: Phase::Fixed, ..Controller::adaptive(k) }
    }

    /// Largest draft length.
    pub(crate) fn max_draft(&self) -> usize {
        self.max
    }

    #[cfg(test)]
    fn phase(&self) -> Phase {
        self.phase
    }

    /// What it has measured so far.
    pub(crate) fn report(&self) -> ControllerReport {
        ControllerReport {
            phase: self.phase,
            max_draft: self.max,
            fixed: self.fixed,
            verify_cost: (0..=self.max).map(|k| self.costs.estimate(k)).collect(),
            draft_cost: self.draft_cost,
            acceptance: self.tally.rate(),
        }
    }

    /// What the next round does, given the drafter's own cost per token (if it knows it) and how
    /// many more tokens the generation may still take after the one every round yields.
    pub(crate) fn plan(&mut self, drafter_cost: Option<f64>, room: usize) -> Plan {
        let ask = match self.phase {
            Phase::Fixed => self.max,
            Phase::WarmUp => {
                let ask = self.warm_up(drafter_cost);
                if self.phase == Phase::CostProbes {
                    return self.plan(drafter_cost, room);
                }
                ask
            }
            Phase::CostProbes => match self.cost_probes(drafter_cost, room) {
                Some(ask) => ask,
                None => return Plan::CostProbe,
            },
            // Probes done, but the drafter has not been measured yet (its first draft came back
            // empty, or the generation ended first): decide again on the newest costs.
            Phase::Drafting if self.unpriced(drafter_cost) => {
                self.phase = Phase::CostProbes;
                return self.plan(drafter_cost, room);
            }
            Phase::BackedOff if self.unpriced(drafter_cost) => {
                if self.rounds < self.reprice_at {
                    0
                } else {
                    self.phase = Phase::CostProbes;
                    return self.plan(drafter_cost, room);
                }
            }
            Phase::Drafting | Phase::BackedOff => self.adapt(drafter_cost),
        };
        match ask.min(room) {
            0 => Plan::Plain,
            k => Plan::Draft(k),
        }
    }

    /// A drafter with a known cost that has never been run: it is priced by cost probes first.
    fn unpriced(&self, drafter_cost: Option<f64>) -> bool {
        drafter_cost.is_some_and(|c| c > 0.0) && self.draft_cost.is_none()
    }

    fn warm_up(&mut self, drafter_cost: Option<f64>) -> usize {
        if self.costs.single().is_none() {
            return 0;
        }
        if self.unpriced(drafter_cost) {
            if self.max == 0 || self.costs.samples(0) < WARMUP_PLAIN_ROUNDS {
                return 0;
            }
            self.phase = Phase::CostProbes;
            return 0;
        }
        // The first full draft prices the slope and the drafter.
        self.phase = Phase::Drafting;
        self.max
    }

    /// A cost probe (`None`) until they are done, then the decision, taken once while the probes'
    /// costs and a single decode's are contemporary (the machine's speed drifts): a full draft
    /// if even always-accepted drafts would leave room to pay, else plain decoding until
    /// [`REPRICE_AFTER`] rounds later.
    fn cost_probes(&mut self, drafter_cost: Option<f64>, room: usize) -> Option<usize> {
        if self.costs.samples(1) < COST_PROBES {
            return if room > 0 { None } else { Some(0) };
        }
        let cost = drafter_cost.unwrap_or(0.0);
        if self.could_pay(cost) {
            self.first_draft_cost = Some(cost);
            self.phase = Phase::Drafting;
            return Some(self.max);
        }
        self.phase = Phase::BackedOff;
        self.reprice_at = self.rounds + REPRICE_AFTER;
        self.costs.forget(1);
        Some(0)
    }

    /// Drafting or backed off: the best length at the measured costs and acceptance.
    fn adapt(&mut self, drafter_cost: Option<f64>) -> usize {
        // What drafting really costs is what rounds measured (it includes catching up on tokens
        // decoded while not drafting); the drafter's own figure serves until then. Until the
        // slope and the cost are known, a full draft measures them.
        let cost = if drafter_cost == Some(0.0) { drafter_cost } else { self.draft_cost.or(drafter_cost) };
        let Some(cost) = cost.filter(|_| self.costs.slope.is_some()) else {
            return self.max;
        };
        if cost == 0.0 {
            // Free drafts: draft everything, `choose` decides with the draft's confidence.
            return self.max;
        }
        let alpha = self.tally.rate();
        let best = self.best(self.max, cost, &|_| alpha);
        self.retry_or(best, cost)
    }

    /// How many of the `available` drafted tokens to verify; `acceptance` is the drafter's own
    /// estimate for each token (see [`Draft::acceptance`](super::Draft::acceptance)), if any.
    pub(crate) fn choose(&mut self, available: usize, acceptance: &[f64]) -> usize {
        let available = available.min(self.max);
        if self.fixed.is_some() || self.costs.slope.is_none() || acceptance.is_empty() {
            return available; // `plan` already chose with the observed rate
        }
        let last = acceptance[acceptance.len() - 1];
        let best = self.best(available, 0.0, &|i| acceptance.get(i).copied().unwrap_or(last));
        if acceptance[0] >= CONFIDENT {
            // Batch costs are irregular (tiling): measure batches of 2, 4, 8, 16, ... once, so
            // interpolation runs between real points.
            if let Some(k) =
                (1..).map(|b| (1usize << b) - 1).take_while(|&k| k <= available).find(|&k| !self.costs.is_measured(k))
            {
                self.phase = Phase::Drafting;
                return k;
            }
            if best < available && self.costs.age(available, self.rounds) >= REMEASURE_AFTER {
                self.phase = Phase::Drafting;
                return available;
            }
        }
        self.retry_or(best, 0.0).min(available)
    }

    /// Records a round that drafted `k` tokens (0: a plain decode) and kept `accepted`, with the
    /// times spent drafting and verifying.
    pub(crate) fn record(&mut self, k: usize, accepted: usize, draft: Duration, verify: Duration) {
        self.record_verify(k, verify);
        if k == 0 {
            return;
        }
        let per_token = draft.as_secs_f64() / k as f64;
        self.draft_cost = match (self.first_draft_cost.take(), self.draft_cost) {
            (Some(own), _) => Some(own),
            (None, Some(old)) => Some((1.0 - DRAFT_COST_WEIGHT) * old + DRAFT_COST_WEIGHT * per_token),
            (None, None) => Some(per_token),
        };
        self.tally.record(k, accepted, ACCEPTANCE_DECAY);
    }

    /// Records what a [cost probe](Plan::CostProbe) cost: a batch of two, not counted as a draft.
    pub(crate) fn record_cost_probe(&mut self, verify: Duration) {
        self.record_verify(1, verify);
    }

    fn record_verify(&mut self, k: usize, verify: Duration) {
        self.rounds += 1;
        self.costs.record(k, verify.as_secs_f64(), self.rounds);
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
        Some(tokens / (self.costs.estimate(k)? + draft_cost * k as f64))
    }

    fn best(&self, up_to: usize, draft_cost: f64, acceptance: &dyn Fn(usize) -> f64) -> usize {
        let rate = |k| self.rate_at(k, draft_cost, acceptance).unwrap_or(0.0);
        (0..=up_to).max_by(|&a, &b| rate(a).total_cmp(&rate(b))).unwrap_or(0)
    }

    /// Whether some draft length would beat plain decoding by [`PAY_MARGIN`] even if every
    /// draft were accepted; if not, retrying for a better acceptance rate cannot change the
    /// decision.
    fn could_pay(&self, draft_cost: f64) -> bool {
        let plain = self.rate_at(0, draft_cost, &|_| 1.0).unwrap_or(0.0);
        (1..=self.max).any(|k| self.rate_at(k, draft_cost, &|_| 1.0).unwrap_or(f64::INFINITY) > PAY_MARGIN * plain)
    }

    /// Takes the `best` length: drafting, or backed off with an occasional short retry draft.
    fn retry_or(&mut self, best: usize, draft_cost: f64) -> usize {
        if best > 0 {
            self.phase = Phase::Drafting;
            self.retry = Retry { idle: 0, every: RETRY_FIRST };
            return best;
        }
        self.phase = Phase::BackedOff;
        self.retry.idle += 1;
        // Costs alone rule drafting out: retry only rarely, to refresh them.
        let every = if self.could_pay(draft_cost) { self.retry.every } else { RETRY_MAX };
        if self.retry.idle >= every {
            self.retry.idle = 0;
            self.retry.every = (self.retry.every * 2).min(RETRY_MAX);
            return RETRY_DRAFT.min(self.max);
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    #[cfg_attr(miri, ignore = "1024-entry tables, priced size by size: minutes under Miri")]
    fn controllers_clamp_huge_draft_lengths() {
        for mut c in [Controller::adaptive(usize::MAX), Controller::fixed(usize::MAX), Controller::adaptive(0)] {
            assert!(c.max_draft() <= MAX_DRAFT);
            assert_eq!(c.costs.estimate(usize::MAX), None);
            c.record(0, 0, Duration::ZERO, secs(0.010));
            c.record_cost_probe(secs(0.012));
            assert!(c.costs.estimate(usize::MAX).is_some_and(f64::is_finite));
            assert!(c.choose(usize::MAX, &[0.9, 0.8]) <= c.max_draft().max(1));
            let _ = c.plan(Some(0.001), usize::MAX);
        }
        let report = Controller::fixed(4).report();
        assert_eq!((report.max_draft, report.fixed, report.verify_cost.len()), (4, Some(4), 5));
        assert_eq!(report.phase, Phase::Fixed);
    }

    /// A simulated decoder: verify times follow `cost(k)` seconds, the drafter costs
    /// `draft_cost` per token (0: free, a copy drafter), and of a draft the first
    /// `accept(round, k)` tokens are kept. Each round yields what the controller did and the
    /// phase it was in afterwards.
    struct Sim<C, A> {
        c: Controller,
        cost: C,
        draft_cost: f64,
        accept: A,
        acceptance: Vec<f64>,
        round: usize,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Did {
        Plain,
        Probe,
        Draft(usize),
    }

    impl<C: Fn(usize) -> f64, A: Fn(usize, usize) -> usize> Sim<C, A> {
        fn new(max: usize, cost: C, draft_cost: f64, accept: A) -> Self {
            Sim { c: Controller::adaptive(max), cost, draft_cost, accept, acceptance: Vec::new(), round: 0 }
        }

        fn step(&mut self) -> (Did, Phase) {
            let did = match self.c.plan(Some(self.draft_cost), usize::MAX) {
                Plan::CostProbe => {
                    self.c.record_cost_probe(secs((self.cost)(1)));
                    Did::Probe
                }
                Plan::Plain => {
                    self.c.record(0, 0, Duration::ZERO, secs((self.cost)(0)));
                    Did::Plain
                }
                Plan::Draft(ask) => {
                    let k = self.c.choose(ask, &self.acceptance);
                    let kept = (self.accept)(self.round, k).min(k);
                    let drafting = secs(self.draft_cost * k as f64);
                    self.c.record(k, kept, drafting, secs((self.cost)(k)));
                    if k == 0 {
                        Did::Plain
                    } else {
                        Did::Draft(k)
                    }
                }
            };
            self.round += 1;
            (did, self.c.phase())
        }

        fn run(&mut self, rounds: usize) -> Vec<(Did, Phase)> {
            (0..rounds).map(|_| self.step()).collect()
        }
    }

    const GPU_LIKE: fn(usize) -> f64 = |k| 0.01 + 0.0005 * k as f64;
    /// A batch of two costs 1.7 decodes (SmolLM2 Q4_1 and Qwen-Coder-1.5B on this CPU).
    const CPU_LIKE: fn(usize) -> f64 = |k| 0.05 * (1.0 + 0.7 * k as f64);

    #[test]
    fn a_free_drafter_drafts_after_one_plain_round() {
        let mut sim = Sim::new(8, GPU_LIKE, 0.0, |_, k| k);
        sim.acceptance = vec![0.95; 8];
        assert_eq!(sim.c.phase(), Phase::WarmUp);
        let did: Vec<Did> = sim.run(8).iter().map(|r| r.0).collect();
        // One plain round prices a decode, a full draft the slope; confident drafts then measure
        // batches of 2, 4 and 8 once before the best length is chosen.
        let lengths = [1, 3, 7, 8, 8, 8].map(Did::Draft);
        assert_eq!(did, [[Did::Plain, Did::Draft(8)].as_slice(), &lengths].concat());
        assert!(sim.run(20).iter().all(|&r| r == (Did::Draft(8), Phase::Drafting)));
    }

    #[test]
    fn retries_rarely_when_costs_alone_rule_drafting_out() {
        // A batch of k + 1 costs k + 1 decodes: even perfect drafts cannot pay.
        let mut sim = Sim::new(8, |k| 0.01 * (k + 1) as f64, 0.0, |_, k| k);
        sim.acceptance = vec![0.5; 8];
        let rounds = sim.run(600);
        let drafts: Vec<(usize, Did)> = (rounds.iter().enumerate().skip(2))
            .filter(|(_, r)| matches!(r.0, Did::Draft(_)))
            .map(|(i, r)| (i, r.0))
            .collect();
        assert_eq!(drafts, [(513, Did::Draft(RETRY_DRAFT))], "one retry, 512 plain rounds after backing off");
        assert!(rounds[2..].iter().all(|r| r.1 == Phase::BackedOff));
    }

    #[test]
    fn a_decision_cut_short_by_the_end_of_a_generation_is_taken_again() {
        let mut c = Controller::adaptive(8);
        for _ in 0..3 {
            assert_eq!(c.plan(Some(0.001), 100), Plan::Plain);
            c.record(0, 0, Duration::ZERO, secs(GPU_LIKE(0)));
        }
        // The generation ends during the probes: no room for a probe, plain.
        assert_eq!(c.plan(Some(0.001), 0), Plan::Plain);
        c.record(0, 0, Duration::ZERO, secs(GPU_LIKE(0)));
        assert_eq!(c.phase(), Phase::CostProbes);
        for _ in 0..3 {
            assert_eq!(c.plan(Some(0.001), 100), Plan::CostProbe);
            c.record_cost_probe(secs(GPU_LIKE(1)));
        }
        // Decided (drafting pays) in a round without room: the drafter is still unmeasured, so
        // the next round decides again and drafts in full.
        assert_eq!(c.plan(Some(0.001), 0), Plan::Plain);
        c.record(0, 0, Duration::ZERO, secs(GPU_LIKE(0)));
        assert_eq!(c.plan(Some(0.001), 100), Plan::Draft(8));
        assert_eq!(c.phase(), Phase::Drafting);
    }

    #[test]
    fn a_costly_drafter_prices_a_batch_before_it_drafts() {
        let mut sim = Sim::new(8, GPU_LIKE, 0.001, |_, k| k);
        let (plain, probe, drafting) =
            ((Did::Plain, Phase::WarmUp), (Did::Probe, Phase::CostProbes), (Did::Draft(8), Phase::Drafting));
        // Three plain rounds price a single decode, three probes a batch of two; then it drafts.
        let mut expected = vec![plain, plain, plain, probe, probe, probe, drafting];
        expected.extend([drafting; 8]);
        assert_eq!(sim.run(15), expected);
    }

    #[test]
    fn a_drafter_that_cannot_pay_is_priced_again_much_later() {
        // CPU-like: a batch of two costs 1.7 decodes, a draft token half a decode.
        let mut sim = Sim::new(8, CPU_LIKE, 0.025, |_, k| k);
        let rounds = sim.run(530);
        let phases: Vec<Phase> = rounds.iter().map(|r| r.1).collect();
        let (warm, probes) = (Phase::WarmUp, Phase::CostProbes);
        assert_eq!(phases[..6], [warm, warm, warm, probes, probes, probes]);
        // Decided after the probes (round 6): backed off, plain rounds only, until re-pricing
        // is due 512 rounds later.
        assert!(rounds[6..518].iter().all(|&r| r == (Did::Plain, Phase::BackedOff)), "{:?}", &rounds[6..]);
        let again: Vec<Did> = rounds[518..].iter().map(|r| r.0).collect();
        assert_eq!(again[..4], [Did::Probe, Did::Probe, Did::Probe, Did::Plain], "{again:?}");
        assert_eq!(rounds[529].1, Phase::BackedOff);
        assert!(rounds.iter().all(|r| !matches!(r.0, Did::Draft(_))), "never runs the drafter");
    }

    #[test]
    fn backs_off_and_retries_at_growing_intervals() {
        // A free drafter, confident and right until round 20, then wrong (and saying so) until
        // round 400, then right again. Verification is cheap, so only acceptance decides.
        let cost = |k: usize| 0.01 + 0.002 * k as f64;
        let mut sim = Sim::new(8, cost, 0.0, |round, k| if (20..400).contains(&round) { 0 } else { k });
        sim.acceptance = vec![0.95; 8];
        let mut rounds = sim.run(20);
        sim.acceptance = vec![0.05; 8];
        rounds.extend(sim.run(380));
        sim.acceptance = vec![0.95; 8];
        rounds.extend(sim.run(20));
        assert_eq!(rounds[5].1, Phase::Drafting);
        let retries: Vec<usize> = (rounds.iter().enumerate())
            .filter(|(i, r)| (20..400).contains(i) && matches!(r.0, Did::Draft(_)))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(retries, [35, 67, 131, 259], "RETRY_FIRST plain rounds, then twice as many each time");
        assert!(rounds[20..400].iter().all(|r| r.1 == Phase::BackedOff), "backed off while drafts fail");
        assert!(retries.iter().all(|&i| rounds[i].0 == Did::Draft(RETRY_DRAFT)));
        // Right again: drafting from the first round that sees it.
        assert_eq!(rounds[400], (Did::Draft(8), Phase::Drafting), "{:?}", &rounds[400..]);
    }

    #[test]
    fn fixed_mode_never_adapts() {
        let mut c = Controller::fixed(5);
        c.record(5, 0, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(c.plan(None, 100), Plan::Draft(5));
        assert_eq!(c.plan(None, 3), Plan::Draft(3), "never more than the room left");
        assert_eq!(c.choose(5, &[0.0]), 5);
        assert_eq!(c.report().phase, Phase::Fixed);
    }

    /// Where a free drafter settles: the last draft length after 200 rounds whose drafts are
    /// accepted with probability `alpha` (deterministically: the expected count).
    fn settle(cost: impl Fn(usize) -> f64, alpha: f64, acceptance: &[f64]) -> usize {
        let kept = move |_, k: usize| (0..k).take_while(|&i| alpha.powi(i as i32 + 1) > 0.5).count();
        let mut sim = Sim::new(8, cost, 0.0, kept);
        sim.acceptance = acceptance.to_vec();
        match sim.run(200).last() {
            Some((Did::Draft(k), _)) => *k,
            _ => 0,
        }
    }

    #[test]
    fn backs_off_to_plain_decoding_when_verification_costs_as_much_as_decoding() {
        // A batch of k + 1 costs k + 1 single decodes: no draft length can pay.
        assert_eq!(settle(|k| 0.01 * (k + 1) as f64, 0.9, &[0.9; 8]), 0);
    }

    #[test]
    fn drafts_long_when_verification_is_cheap_and_drafts_are_good() {
        assert_eq!(settle(GPU_LIKE, 0.99, &[0.99; 8]), 8);
    }

    #[test]
    fn reading_the_prompt_once_does_not_make_a_draft_model_look_dear() {
        // GPU-like costs; the first draft also reads a long prompt (a second, 100 decodes' worth).
        let mut c = Controller::adaptive(8);
        let mut asked = Vec::new();
        let mut catch_up = 1.0;
        for _ in 0..15 {
            match c.plan(Some(0.001), usize::MAX) {
                Plan::CostProbe => {
                    c.record_cost_probe(secs(GPU_LIKE(1)));
                    asked.push(None);
                }
                plan => {
                    let k = if let Plan::Draft(k) = plan { k } else { 0 };
                    let drafting = if k > 0 { 0.001 * k as f64 + std::mem::take(&mut catch_up) } else { 0.0 };
                    c.record(k, k, secs(drafting), secs(GPU_LIKE(k)));
                    asked.push(Some(k));
                }
            }
        }
        assert_eq!(asked[6], Some(8), "{asked:?}");
        assert!(asked[7..].iter().all(|&k| k == Some(8)), "{asked:?}");
    }
}
