//! Which tokens each sequence holds in the KV cache: the one record prefix reuse trusts.
//!
//! Every operation that changes the cache reports here (decode, `kv_seq_*`, state loads,
//! adapters), so a later request can skip the prompt prefix a sequence already holds. When the
//! cache's contents for a sequence can no longer be described as "positions `0..n` hold these
//! tokens" (a hole, a shift, a restored state, KV computed under other adapters), the sequence
//! becomes *unknown* and nothing is reused from it until it is emptied.

use crate::{Batch, Token};

#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    /// Per sequence id: `Some(tokens)` at positions `0..len`, or `None` when unknown.
    seqs: Vec<Option<Vec<Token>>>,
}

impl Ledger {
    pub(crate) fn new(n_seq: usize) -> Ledger {
        Ledger { seqs: vec![Some(Vec::new()); n_seq.max(1)] }
    }

    /// The tokens sequence `seq` holds at positions `0..n`; empty when unknown or out of range.
    pub(crate) fn tokens(&self, seq: i32) -> &[Token] {
        self.known(seq).unwrap_or(&[])
    }

    /// `None` when the sequence's contents are unknown (or `seq` is out of range).
    pub(crate) fn known(&self, seq: i32) -> Option<&[Token]> {
        self.seqs.get(usize::try_from(seq).ok()?)?.as_deref()
    }

    fn slot(&mut self, seq: i32) -> Option<&mut Option<Vec<Token>>> {
        self.seqs.get_mut(usize::try_from(seq).ok()?)
    }

    /// After a successful decode: each token extends its sequences if it lands right after
    /// their last position; anything else makes them unknown.
    pub(crate) fn record(&mut self, batch: &Batch) {
        if !batch.has_tokens() {
            for i in 0..batch.len() {
                for &s in batch.seq_ids(i) {
                    self.forget(s);
                }
            }
            return;
        }
        for (i, &token) in batch.tokens().iter().enumerate() {
            let pos = batch.pos(i);
            for &s in batch.seq_ids(i) {
                if let Some(entry) = self.slot(s) {
                    match entry {
                        Some(tokens) if usize::try_from(pos).ok() == Some(tokens.len()) => tokens.push(token),
                        _ => *entry = None,
                    }
                }
            }
        }
    }

    /// The batch's sequences after a decode that may have changed the cache partly.
    pub(crate) fn forget_batch(&mut self, batch: &Batch) {
        for i in 0..batch.len() {
            for &s in batch.seq_ids(i) {
                self.forget(s);
            }
        }
    }

    pub(crate) fn forget(&mut self, seq: i32) {
        if let Some(entry) = self.slot(seq) {
            *entry = None;
        }
    }

    pub(crate) fn forget_all(&mut self) {
        self.seqs.iter_mut().for_each(|s| *s = None);
    }

    /// The cache was emptied.
    pub(crate) fn clear_all(&mut self) {
        self.seqs.iter_mut().for_each(|s| *s = Some(Vec::new()));
    }

    /// Positions `p0..p1` (`p1 < 0`: to the end) were removed from `seq`.
    pub(crate) fn removed(&mut self, seq: i32, p0: i32, p1: i32) {
        let Some(entry) = self.slot(seq) else { return };
        let p0 = usize::try_from(p0).unwrap_or(0);
        match entry {
            Some(tokens) if p1 < 0 || usize::try_from(p1).is_ok_and(|p1| p1 >= tokens.len()) => tokens.truncate(p0),
            Some(tokens) if usize::try_from(p1).is_ok_and(|p1| p1 <= p0) => {}
            _ if p0 == 0 && p1 < 0 => *entry = Some(Vec::new()),
            _ => *entry = None,
        }
    }

    /// Positions `p0..p1` of `src` were shared into `dst`.
    pub(crate) fn copied(&mut self, src: i32, dst: i32, p0: i32, p1: i32) {
        if src == dst {
            return;
        }
        let prefix = self.known(src).filter(|_| p0 == 0).map(|t| {
            let end = usize::try_from(p1).map_or(t.len(), |p1| p1.min(t.len()));
            t[..end].to_vec()
        });
        let Some(entry) = self.slot(dst) else { return };
        *entry = match (prefix, entry.as_deref()) {
            // A known prefix copied into an empty sequence: `dst` now holds those tokens.
            (Some(tokens), Some([])) => Some(tokens),
            _ => None,
        };
    }

    /// Every sequence but `seq` was removed.
    pub(crate) fn kept(&mut self, seq: i32) {
        for (i, entry) in self.seqs.iter_mut().enumerate() {
            if i32::try_from(i).ok() != Some(seq) {
                *entry = Some(Vec::new());
            }
        }
    }

    /// Entries for positions `pos..` of `seq` decoded outside a [`Batch`] (media embeddings):
    /// they extend the sequence if they start right after its last position.
    #[cfg(feature = "mtmd")]
    pub(crate) fn appended(&mut self, seq: i32, pos: i32, entries: &[Token]) {
        let Some(entry) = self.slot(seq) else { return };
        match entry {
            Some(tokens) if usize::try_from(pos).ok() == Some(tokens.len()) => tokens.extend_from_slice(entries),
            _ => *entry = None,
        }
    }

    /// For crate code that knows exactly what a sequence holds after several operations (e.g.
    /// context shifting: a removal then a shift).
    pub(crate) fn set(&mut self, seq: i32, tokens: Vec<Token>) {
        if let Some(entry) = self.slot(seq) {
            *entry = Some(tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ledger;
    use crate::{Batch, Logits, Token};

    fn batch(tokens: &[i32], start: usize, seq: usize) -> Batch {
        let mut b = Batch::new(tokens.len().max(1), 1);
        let tokens: Vec<Token> = tokens.iter().map(|&t| Token(t)).collect();
        b.add_sequence(&tokens, start, seq, Logits::Want).unwrap();
        b
    }

    #[test]
    #[cfg_attr(miri, ignore = "calls llama.cpp, which Miri cannot run")]
    fn decodes_extend_and_removals_truncate() {
        let mut l = Ledger::new(2);
        l.record(&batch(&[1, 2, 3], 0, 0));
        l.record(&batch(&[4], 3, 0));
        assert_eq!(l.tokens(0), &[Token(1), Token(2), Token(3), Token(4)]);
        l.removed(0, 2, -1);
        assert_eq!(l.tokens(0), &[Token(1), Token(2)]);
        // A hole makes it unknown; emptying it makes it known again.
        l.removed(0, 0, 1);
        assert_eq!(l.known(0), None);
        l.removed(0, 0, -1);
        assert_eq!(l.known(0), Some(&[][..]));
    }

    #[test]
    #[cfg_attr(miri, ignore = "calls llama.cpp, which Miri cannot run")]
    fn a_gap_or_an_overwrite_makes_a_sequence_unknown() {
        let mut l = Ledger::new(1);
        l.record(&batch(&[1, 2], 0, 0));
        l.record(&batch(&[9], 5, 0));
        assert_eq!(l.known(0), None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "calls llama.cpp, which Miri cannot run")]
    fn whole_copies_into_empty_sequences_are_exact() {
        let mut l = Ledger::new(3);
        l.record(&batch(&[1, 2, 3], 0, 0));
        l.copied(0, 1, 0, -1);
        assert_eq!(l.tokens(1), l.tokens(0));
        l.copied(0, 2, 0, 2);
        assert_eq!(l.tokens(2), &[Token(1), Token(2)]);
        l.copied(0, 2, 1, 3);
        assert_eq!(l.known(2), None);
        l.kept(1);
        assert_eq!(l.known(0), Some(&[][..]));
        assert_eq!(l.tokens(1).len(), 3);
    }
}
