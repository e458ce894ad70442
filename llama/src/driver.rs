//! The generation driver: what happens to each chosen token, whoever chose it. Plain
//! generation ([`Context::generate`](crate::Context::generate)), speculative decoding and the
//! serving engine all feed their tokens through one [`Driver`], so end-of-generation, token
//! limits, cancellation, UTF-8 assembly, stop strings and log-probabilities behave the same
//! everywhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::TokenizeError;
use crate::generate::{FinishReason, GenerateParams, Piece};
use crate::{ControlText, StopStrings, Token, Vocab};

/// One generation's output state. Feed it tokens with [`push`](Self::push) while
/// [`may_continue`](Self::may_continue) says so; end with [`flush`](Self::flush).
#[derive(Debug)]
pub(crate) struct Driver {
    out: StopStrings,
    max_tokens: usize,
    cancel: Option<Arc<AtomicBool>>,
    show_special: Vec<Token>,
    logprobs: bool,
    top_logprobs: usize,
    generated: usize,
    finish: Option<FinishReason>,
    flushed: bool,
}

impl Driver {
    pub(crate) fn new(params: &GenerateParams) -> Driver {
        Driver {
            out: StopStrings::new(params.stop.iter().cloned()),
            max_tokens: params.max_tokens,
            cancel: params.cancel.clone(),
            show_special: params.show_special.clone(),
            logprobs: params.logprobs || params.top_logprobs > 0,
            top_logprobs: params.top_logprobs,
            generated: 0,
            finish: None,
            flushed: false,
        }
    }

    /// Whether another token may be produced. If not, the reason is recorded: an earlier end,
    /// the token limit, or the cancellation flag.
    pub(crate) fn may_continue(&mut self) -> bool {
        if self.finish.is_some() {
            return false;
        }
        if self.generated >= self.max_tokens {
            self.finish = Some(FinishReason::Length);
        } else if self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            self.finish = Some(FinishReason::Cancelled);
        }
        self.finish.is_none()
    }

    /// How many more tokens may be produced.
    pub(crate) fn remaining(&self) -> usize {
        self.max_tokens.saturating_sub(self.generated)
    }

    /// Whether log-probabilities are wanted (read the logits row before sampling).
    pub(crate) fn wants_logprobs(&self) -> bool {
        self.logprobs
    }

    /// Takes the next chosen token, with the logits row it was chosen from when
    /// [`wants_logprobs`](Self::wants_logprobs). `None`: the token ended generation (end of
    /// generation; it is not emitted).
    pub(crate) fn push(
        &mut self,
        vocab: &Vocab<'_>,
        token: Token,
        logits: Option<&[f32]>,
    ) -> Result<Option<Piece>, TokenizeError> {
        if vocab.is_eog(token) {
            self.finish = Some(FinishReason::Eog);
            return Ok(None);
        }
        self.generated += 1;
        // Known now, not one decode later: the caller need not decode a token nobody samples after.
        if self.generated >= self.max_tokens {
            self.finish = Some(FinishReason::Length);
        }
        let (logprob, top_logprobs) = match logits.filter(|_| self.logprobs) {
            Some(row) => log_probs(row, token, self.top_logprobs),
            None => (None, Vec::new()),
        };
        let control = if self.show_special.contains(&token) { ControlText::Show } else { ControlText::Hide };
        let bytes = vocab.token_to_bytes(token, control)?;
        let text = self.out.push(&bytes);
        if self.out.stopped() {
            self.finish = Some(FinishReason::Stop);
        }
        Ok(Some(Piece { token: Some(token), text, logprob, top_logprobs }))
    }

    /// Ends generation for a reason only the caller knows (e.g. the context is full), unless it
    /// already ended.
    pub(crate) fn end(&mut self, reason: FinishReason) {
        self.finish.get_or_insert(reason);
    }

    /// Once: the text held back at the end (a possible stop-string prefix, incomplete UTF-8).
    pub(crate) fn flush(&mut self) -> Option<Piece> {
        if std::mem::replace(&mut self.flushed, true) {
            return None;
        }
        let text = self.out.finish();
        if text.is_empty() {
            return None;
        }
        Some(Piece { token: None, text, logprob: None, top_logprobs: Vec::new() })
    }

    pub(crate) fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Tokens produced (end-of-generation tokens excluded).
    pub(crate) fn generated(&self) -> usize {
        self.generated
    }

    /// The stop string that ended generation, if one did.
    pub(crate) fn stop_sequence(&self) -> Option<&str> {
        self.out.matched()
    }

    /// The text emitted so far.
    pub(crate) fn text(&self) -> &str {
        self.out.text()
    }
}

/// The chosen token's log-probability under `logits` and the `top` most likely tokens'.
fn log_probs(logits: &[f32], token: Token, top: usize) -> (Option<f32>, Vec<(Token, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let chosen = logits.get(usize::try_from(token.0).unwrap_or(usize::MAX)).map(|&l| l - lse);
    let mut best: Vec<(Token, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if best.len() == top && best.last().is_some_and(|&(_, b)| l <= b) {
                continue;
            }
            let at = best.partition_point(|&(_, b)| b >= l);
            best.insert(at, (Token(i as i32), l));
            best.truncate(top);
        }
    }
    (chosen, best.into_iter().map(|(t, l)| (t, l - lse)).collect())
}

#[cfg(test)]
mod tests {
    use super::log_probs;
    use crate::Token;

    #[test]
    fn top_logprobs_are_the_largest_in_order() {
        let logits = [0.0f32, 3.0, 1.0, 2.0];
        let (chosen, top) = log_probs(&logits, Token(2), 2);
        let ids: Vec<i32> = top.iter().map(|(t, _)| t.0).collect();
        assert_eq!(ids, [1, 3]);
        assert!(chosen.unwrap() < top[1].1);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((top[0].1 - (3.0f32.exp() / z).ln()).abs() < 1e-5);
    }
}
