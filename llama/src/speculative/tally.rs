//! Decayed counts of accepted and rejected drafts: the acceptance estimate the controller and the
//! copy drafter each keep.

/// Accepted draft tokens and rejected drafts, each decayed per recorded round so recent rounds
/// weigh most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tally {
    accepted: f64,
    rejected: f64,
}

impl Tally {
    /// Starts as if `accepted` tokens had been kept and `rejected` drafts refused: the prior.
    pub(crate) const fn new(accepted: f64, rejected: f64) -> Self {
        Tally { accepted, rejected }
    }

    /// Estimated probability that a draft token is accepted given that those before it were.
    pub(crate) fn rate(self) -> f64 {
        self.accepted / (self.accepted + self.rejected)
    }

    /// Records a round that verified `drafted` tokens and kept `accepted`, after decaying the
    /// past by `decay`. A round with a rejection counts one rejection: of a draft, only the
    /// first wrong token is seen.
    pub(crate) fn record(&mut self, drafted: usize, accepted: usize, decay: f64) {
        self.accepted = self.accepted * decay + accepted as f64;
        self.rejected = self.rejected * decay + f64::from(u8::from(accepted < drafted));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_rounds_weigh_most() {
        let mut t = Tally::new(1.0, 1.0);
        assert_eq!(t.rate(), 0.5);
        t.record(4, 4, 0.9);
        assert!((t.rate() - 4.9 / 5.8).abs() < 1e-12, "{}", t.rate());
        for _ in 0..50 {
            t.record(4, 0, 0.9);
        }
        assert!(t.rate() < 0.01, "{}", t.rate());
    }
}
