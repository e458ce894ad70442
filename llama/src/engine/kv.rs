//! The KV pool as the engine sees it: which cells its sequences hold (a prefix shared by
//! several sequences counted once), and the host-RAM tier where a sequence's cache goes when the
//! pool needs its cells, to come back on a later prefix match.
//!
//! Every change the engine makes to the cache goes through [`Pool`], so its count of used cells
//! is exact, and admission and eviction can plan with it instead of waiting for a decode to fail.

use std::collections::HashMap;

use super::metrics::RamTier;
use crate::{Context, Token};

/// A run of positions `start..end` of one block: cells decoded (or restored) once, shared by
/// every sequence a prefix copy gave them to.
#[derive(Debug, Clone, Copy)]
struct Span {
    block: u64,
    start: usize,
    end: usize,
}

/// Cells held, per sequence, as spans of blocks. A block's cells are the union of what its
/// holders keep of it: positions from its start to the furthest end any holder has.
#[derive(Debug)]
struct Cells {
    seqs: Vec<Vec<Span>>,
    next_block: u64,
}

impl Cells {
    fn len(&self, seq: usize) -> usize {
        self.seqs[seq].last().map_or(0, |s| s.end)
    }

    fn shared(&self, seq: usize, block: u64) -> bool {
        self.seqs.iter().enumerate().any(|(i, spans)| i != seq && spans.iter().any(|s| s.block == block))
    }

    /// `n` positions decoded after the end of `seq`. A block another sequence also holds is never
    /// extended: the new cells are this sequence's alone.
    fn append(&mut self, seq: usize, n: usize) {
        if n == 0 {
            return;
        }
        let end = self.len(seq);
        match self.seqs[seq].last().copied() {
            Some(last) if !self.shared(seq, last.block) => {
                if let Some(l) = self.seqs[seq].last_mut() {
                    l.end += n;
                }
            }
            _ => {
                self.next_block += 1;
                self.seqs[seq].push(Span { block: self.next_block, start: end, end: end + n });
            }
        }
    }

    fn truncate(&mut self, seq: usize, keep: usize) {
        let spans = &mut self.seqs[seq];
        spans.retain(|s| s.start < keep);
        if let Some(last) = spans.last_mut() {
            last.end = last.end.min(keep);
        }
    }

    /// `dst` (emptied first) takes `src`'s cells at positions `0..n`.
    fn copy(&mut self, src: usize, dst: usize, n: usize) {
        let mut spans = self.seqs[src].clone();
        spans.retain(|s| s.start < n);
        if let Some(last) = spans.last_mut() {
            last.end = last.end.min(n);
        }
        self.seqs[dst] = spans;
    }

    /// Distinct cells held by the sequences `which` accepts.
    fn used(&self, which: impl Fn(usize) -> bool) -> usize {
        let mut blocks: HashMap<u64, (usize, usize)> = HashMap::new();
        for (_, spans) in self.seqs.iter().enumerate().filter(|&(seq, _)| which(seq)) {
            for s in spans {
                let b = blocks.entry(s.block).or_insert((s.start, s.end));
                b.0 = b.0.min(s.start);
                b.1 = b.1.max(s.end);
            }
        }
        blocks.values().map(|&(start, end)| end - start).sum()
    }
}

/// Sequences' caches saved to host RAM, least recently used dropped first once they pass the
/// budget in bytes. An entry is the tokens a sequence held and its serialised KV state.
#[derive(Debug)]
struct RamCache {
    entries: Vec<Saved>,
    bytes: usize,
    budget: usize,
    clock: u64,
}

#[derive(Debug)]
struct Saved {
    /// Stable while the entry lives: indices move as entries come and go.
    id: u64,
    tokens: Vec<Token>,
    state: Vec<u8>,
    used: u64,
}

impl RamCache {
    /// Whether an entry already holds `tokens` (or more of the same conversation).
    fn holds(&self, tokens: &[Token]) -> bool {
        self.entries.iter().any(|e| e.tokens.starts_with(tokens))
    }

    /// Keeps `state`; entries it extends are dropped, then the least recently used until the
    /// budget holds. Returns false if it is bigger than the whole budget.
    fn insert(&mut self, tokens: Vec<Token>, state: Vec<u8>) -> bool {
        if state.len() > self.budget {
            return false;
        }
        self.entries.retain(|e| {
            let extended = tokens.starts_with(&e.tokens);
            if extended {
                self.bytes -= e.state.len();
            }
            !extended
        });
        while self.bytes + state.len() > self.budget {
            let Some(lru) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].used) else { break };
            self.bytes -= self.entries.swap_remove(lru).state.len();
        }
        self.clock += 1;
        self.bytes += state.len();
        self.entries.push(Saved { id: self.clock, tokens, state, used: self.clock });
        true
    }

    /// The entry sharing the longest prefix with `prompt` (at most `limit` tokens of it): its id
    /// and that length.
    fn best(&self, prompt: &[Token], limit: usize) -> Option<(u64, usize)> {
        self.entries
            .iter()
            .map(|e| (e.id, common_prefix(&e.tokens, prompt).min(limit)))
            .filter(|&(_, c)| c > 0)
            .max_by_key(|&(_, c)| c)
    }
}

/// Tokens `a` and `b` share at their start.
pub(super) fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The engine's view of its context's KV cache, and the RAM tier behind it.
#[derive(Debug)]
pub(super) struct Pool {
    cells: Cells,
    ram: RamCache,
    stats: RamTier,
}

/// Restoring a saved prefix is worth it only when it spares this many more prompt tokens than
/// what the slot holds already (a restore copies the whole entry in).
pub(super) const RAM_MIN_GAIN: usize = 32;

impl Pool {
    /// A pool of `n_seq` empty sequences with `ram_budget` bytes of host RAM for saved prefixes
    /// (0: none kept).
    pub fn new(n_seq: usize, ram_budget: usize) -> Pool {
        Pool {
            cells: Cells { seqs: vec![Vec::new(); n_seq], next_block: 0 },
            ram: RamCache { entries: Vec::new(), bytes: 0, budget: ram_budget, clock: 0 },
            stats: RamTier::default(),
        }
    }

    /// Distinct cells in use by all sequences.
    pub fn used(&self) -> usize {
        self.cells.used(|_| true)
    }

    /// Distinct cells in use by the sequences `which` accepts.
    pub fn used_by(&self, which: impl Fn(usize) -> bool) -> usize {
        self.cells.used(which)
    }

    /// Cells `seq` holds (its length).
    pub fn len(&self, seq: usize) -> usize {
        self.cells.len(seq)
    }

    /// A decode added `n` positions at the end of `seq`.
    pub fn decoded(&mut self, seq: usize, n: usize) {
        self.cells.append(seq, n);
    }

    /// Keeps positions `0..keep` of `seq`; with an error the whole sequence is removed.
    pub fn truncate(&mut self, ctx: &mut Context, seq: usize, keep: usize) -> usize {
        let keep = keep.min(self.cells.len(seq));
        if ctx.kv_seq_rm(seq, keep..).is_ok() {
            self.cells.truncate(seq, keep);
            return keep;
        }
        self.clear(ctx, seq);
        0
    }

    /// Removes everything `seq` holds.
    pub fn clear(&mut self, ctx: &mut Context, seq: usize) {
        // Removing a whole sequence cannot fail for the engine's own ids (llama.cpp refuses only
        // partial removals, of recurrent state).
        let _ = ctx.kv_seq_rm(seq, ..);
        self.cells.truncate(seq, 0);
    }

    /// `dst` takes `src`'s positions `0..n` (shared cells, no copy). Returns how many it holds.
    pub fn share(&mut self, ctx: &mut Context, src: usize, dst: usize, n: usize) -> usize {
        self.clear(ctx, dst);
        let n = n.min(self.cells.len(src));
        if ctx.kv_seq_cp(src, dst, 0..n).is_err() {
            self.clear(ctx, dst);
            return 0;
        }
        self.cells.copy(src, dst, n);
        n
    }

    /// Saves what `seq` holds to RAM unless an entry already has it. Never fails loudly: a
    /// prefix that cannot be kept is only recomputed later.
    pub fn save(&mut self, ctx: &Context, seq: usize) {
        let Some(tokens) = ctx.cached_tokens(seq) else { return };
        if tokens.is_empty() || self.ram.budget == 0 || self.ram.holds(tokens) {
            return;
        }
        let tokens = tokens.to_vec();
        if let Ok(state) = ctx.save_seq_state(seq) {
            if self.ram.insert(tokens, state) {
                self.stats.saves += 1;
            }
        }
    }

    /// The saved prefix sharing the most with `prompt` (up to `limit` tokens): (entry id, common).
    pub fn lookup(&self, prompt: &[Token], limit: usize) -> Option<(u64, usize)> {
        self.ram.best(prompt, limit)
    }

    /// Cells saved entry `id` needs to be restored (0 if it is gone).
    pub fn entry_len(&self, id: u64) -> usize {
        self.ram.entries.iter().find(|e| e.id == id).map_or(0, |e| e.tokens.len())
    }

    /// Loads saved entry `id` into `seq` (emptied first) and keeps its first `keep` positions.
    /// Returns how many it holds: 0 if the entry is gone or the pool had no room for it.
    pub fn restore(&mut self, ctx: &mut Context, seq: usize, id: u64, keep: usize) -> usize {
        self.clear(ctx, seq);
        let saved = self.ram.entries.iter_mut().find(|e| e.id == id);
        let (Some(saved), Ok(c_seq)) = (saved, i32::try_from(seq)) else { return 0 };
        self.ram.clock += 1;
        saved.used = self.ram.clock;
        if ctx.load_seq_state(seq, &saved.state).is_err() {
            self.clear(ctx, seq);
            return 0;
        }
        // The state was saved from a sequence holding exactly these tokens at 0..n.
        let tokens = saved.tokens.clone();
        let n = tokens.len();
        ctx.ledger.set(c_seq, tokens);
        self.cells.seqs[seq].clear();
        self.cells.append(seq, n);
        self.stats.hits += 1;
        self.truncate(ctx, seq, keep)
    }

    /// An admission took nothing from RAM.
    pub fn missed(&mut self) {
        self.stats.misses += 1;
    }

    pub fn stats(&self) -> RamTier {
        RamTier { entries: self.ram.entries.len(), bytes: self.ram.bytes, ..self.stats }
    }

    /// Forgets every cell (the context was cleared).
    pub fn reset(&mut self) {
        self.cells.seqs.iter_mut().for_each(Vec::clear);
    }
}

#[cfg(test)]
mod tests {
    use super::{Cells, RamCache};
    use crate::Token;

    #[test]
    fn shared_prefixes_count_once() {
        let mut c = Cells { seqs: vec![Vec::new(); 3], next_block: 0 };
        c.append(0, 100);
        c.copy(0, 1, 60);
        assert_eq!(c.used(|_| true), 100);
        c.append(1, 10);
        c.append(0, 5);
        assert_eq!(c.used(|_| true), 115, "each grows its own cells past the shared 60");
        c.truncate(0, 20);
        assert_eq!(c.used(|_| true), 70, "seq 1 still holds 0..60 and its 10");
        assert_eq!(c.used(|s| s == 0), 20);
        c.copy(1, 2, 70);
        c.truncate(1, 0);
        assert_eq!(c.used(|_| true), 70);
        c.append(0, 1);
        assert_eq!(c.used(|_| true), 71, "seq 0 shares its block with seq 2: a new one");
    }

    #[test]
    fn the_ram_tier_keeps_the_longest_and_most_recent_within_its_budget() {
        let t = |n: i32| (0..n).map(Token).collect::<Vec<_>>();
        let mut r = RamCache { entries: Vec::new(), bytes: 0, budget: 100, clock: 0 };
        assert!(r.insert(t(10), vec![0; 40]));
        assert!(r.insert(t(20), vec![0; 50]), "extends the first: it replaces it");
        assert_eq!((r.entries.len(), r.bytes), (1, 50));
        assert!(r.holds(&t(15)));
        let other: Vec<Token> = (100..130).map(Token).collect();
        assert!(r.insert(other.clone(), vec![0; 60]), "the older entry goes to make room");
        assert_eq!((r.entries.len(), r.bytes), (1, 60));
        assert!(!r.insert(t(5), vec![0; 101]), "bigger than the budget");
        let mut prompt = other.clone();
        prompt.push(Token(7));
        let id = r.entries[0].id;
        assert_eq!(r.best(&prompt, 100), Some((id, 30)));
        assert_eq!(r.best(&prompt, 12), Some((id, 12)));
        assert_eq!(r.best(&t(3), 100), None);
    }
}
