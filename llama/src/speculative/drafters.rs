//! Drafters: a smaller model sharing the target's vocabulary, and n-gram prompt lookup.

use super::{softmax, Draft, Drafter, SpeculativeError};
use crate::{Batch, Context, Token};

/// Drafts by looking up the longest recent n-gram of the history earlier in the history and
/// proposing what followed it (prompt lookup). Free to run; pays off when output copies input.
#[derive(Debug, Clone)]
pub struct NgramDrafter {
    /// Longest n-gram to match.
    pub max_n: usize,
    /// Shortest n-gram to match.
    pub min_n: usize,
}

impl Default for NgramDrafter {
    fn default() -> Self {
        NgramDrafter { max_n: 6, min_n: 3 }
    }
}

impl Drafter for NgramDrafter {
    fn draft(&mut self, history: &[Token], n: usize) -> Result<Draft, SpeculativeError> {
        let len = history.len();
        for size in (self.min_n.max(1)..=self.max_n).rev() {
            if len <= size {
                continue;
            }
            let key = &history[len - size..];
            // Most recent earlier occurrence.
            if let Some(start) = (0..len - size).rev().find(|&s| &history[s..s + size] == key) {
                let from = start + size;
                let tokens: Vec<Token> = history[from..].iter().take(n).copied().collect();
                if !tokens.is_empty() {
                    return Ok(Draft { tokens, probs: Vec::new() });
                }
            }
        }
        Ok(Draft::default())
    }

    fn cost_per_token(&self) -> Option<f64> {
        Some(0.0)
    }
}

/// Drafts with a smaller model (its own context) that shares the target's vocabulary.
pub struct DraftModel {
    ctx: Context,
    /// Tokens in the draft context's cache (sequence 0).
    cached: Vec<Token>,
    /// Sample from the draft distribution at this temperature (`None` = greedy).
    temperature: Option<f32>,
    rng: u64,
    batch: Batch,
}

impl std::fmt::Debug for DraftModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraftModel").field("model", self.ctx.model()).finish()
    }
}

impl DraftModel {
    /// A greedy draft model. `target` is checked for vocabulary compatibility: same type, size,
    /// special tokens and token texts.
    pub fn new(draft: Context, target: &Context) -> Result<Self, SpeculativeError> {
        check_compatible(&draft, target)?;
        let batch = Batch::new(draft.n_batch() as usize, 1);
        Ok(DraftModel { ctx: draft, cached: Vec::new(), temperature: None, rng: 1, batch })
    }

    /// Draft by sampling at `temperature` (for [`Mode::Sample`](super::Mode::Sample)); the
    /// draft probabilities are reported so the target keeps its exact distribution.
    pub fn sampling(mut self, temperature: f32, seed: u64) -> Self {
        self.temperature = Some(temperature);
        self.rng = seed | 1;
        self
    }
}

fn check_compatible(draft: &Context, target: &Context) -> Result<(), SpeculativeError> {
    let (d, t) = (draft.vocab(), target.vocab());
    let mismatch = |what: &str| Err(SpeculativeError::VocabMismatch(what.to_string()));
    if d.vocab_type() != t.vocab_type() {
        return mismatch("tokenizer type");
    }
    if d.n_tokens() != t.n_tokens() {
        return mismatch(&format!("size {} vs {}", d.n_tokens(), t.n_tokens()));
    }
    if (d.bos(), d.eos(), d.eot()) != (t.bos(), t.eos(), t.eot()) {
        return mismatch("special tokens");
    }
    for i in 0..d.n_tokens() {
        if d.text(Token(i)).ok() != t.text(Token(i)).ok() {
            return mismatch(&format!("text of token {i}"));
        }
    }
    Ok(())
}

impl Drafter for DraftModel {
    fn draft(&mut self, history: &[Token], n: usize) -> Result<Draft, SpeculativeError> {
        if history.len() + n > self.ctx.n_ctx() as usize {
            return Err(SpeculativeError::ContextTooSmall { prompt: history.len(), extra: n, n_ctx: self.ctx.n_ctx() });
        }
        // Bring the cache to `history`, keeping the common prefix.
        let common = self.cached.iter().zip(history).take_while(|(a, b)| a == b).count().min(history.len() - 1);
        self.ctx.kv_seq_rm(0, common as i32..)?;
        self.cached.truncate(common);
        let n_batch = self.batch.capacity();
        for (i, chunk) in history[common..].chunks(n_batch).enumerate() {
            self.batch.clear();
            let last = common + (i + 1) * n_batch >= history.len();
            self.batch.add_sequence(chunk, (common + i * n_batch) as i32, 0, last)?;
            self.ctx.decode(&self.batch)?;
            self.cached.extend_from_slice(chunk);
        }
        let mut draft = Draft::default();
        for i in 0..n {
            let logits = self.ctx.logits_ith(-1).ok_or(crate::DecodeError::InvalidBatch)?;
            let token = match self.temperature {
                None => Token(logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i) as i32),
                Some(t) => {
                    let q = softmax(logits, t);
                    let token = super::sample_index(&q, &mut self.rng);
                    draft.probs.push(q);
                    token
                }
            };
            draft.tokens.push(token);
            if i + 1 < n {
                self.batch.clear();
                self.batch.add(token, (history.len() + i) as i32, &[0], true)?;
                self.ctx.decode(&self.batch)?;
                self.cached.push(token);
            }
        }
        Ok(draft)
    }
}
