//! Drafters: a smaller model sharing the target's vocabulary, and prompt lookup that follows copies.

use std::time::Instant;

use super::tally::Tally;
use super::{argmax, Draft, Drafter, SpeculativeError};
use crate::{Batch, Context, Logits, Output, Token};

/// Prompt lookup: drafts by copying from earlier text of the prompt and output.
///
/// It keeps an *alignment*: the position in the history that the next token is expected to
/// repeat. Each token that matches moves the alignment on. A token that does not starts a
/// divergence; the alignment is found again first near where the copy left off (so a copy
/// picks up right after a small edit), else anywhere (the longest earlier occurrence of the
/// recent tokens, at least [`min_match`](Self::min_match) long).
///
/// When a copy resumes near where it left off, the divergence is remembered as an *edit*
/// (these source tokens became those output tokens, e.g. ` total` → ` grand` `_total`) and
/// replayed wherever the source shows the same tokens again, so a rewrite that applies one
/// change throughout (a rename) is drafted correctly after its first occurrence.
///
/// The length of the unbroken copy run is the confidence signal: the drafter learns, online,
/// how often drafts are accepted after runs of each length and reports that per position as
/// [`Draft::acceptance`](super::Draft::acceptance), so the controller drafts long only inside
/// long, consistent copies.
///
/// It keeps its state between calls and reads only what each call's history appends. Call
/// [`Drafter::begin`] with each new prompt (the [`SpeculativeDecoder`](super::SpeculativeDecoder)
/// does) so that a new text is told from a continuation; without it, only a shorter history or a
/// different token where the last one ended starts it over, and a stale alignment costs speed (its
/// drafts are refused), never correctness.
#[derive(Debug, Clone)]
pub struct CopyDrafter {
    min_match: usize,
    /// Where the copy stands; `None` before any alignment was found.
    state: Option<Cursor>,
    /// Where the copy broke, while it stays broken.
    diverged: Option<Divergence>,
    /// A local resynchronisation not yet confirmed by [`CONFIRM`] matching tokens: if the
    /// copy breaks again first, the two divergences are one edit (e.g. `\n\n` became `\n`
    /// `\n`, found one token at a time), so the first is undone and the divergence reopened.
    pending: Option<Pending>,
    /// Length of the history when the drafter started following it: what comes after was
    /// generated (a copy), what comes before is the source it copies.
    origin: usize,
    /// Learned edits, replayed while copying.
    edits: Vec<Edit>,
    /// Tokens copied in a row under the current alignment.
    run: usize,
    /// The history followed so far, extended by what each call appends: tells a continuation
    /// from a new history.
    seen: Vec<Token>,
    /// Acceptance after copy runs of each length bucket.
    buckets: [Tally; BUCKETS],
    /// Bucket of the last draft.
    last_bucket: usize,
}

/// A position in the (edited) source: the next source token, or the middle of an edit's
/// replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    anchor: usize,
    /// Set while an edit's replacement is being replayed.
    edit: Option<Replay>,
}

/// Replaying `edits[edit].to`; the next output token is at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Replay {
    edit: usize,
    offset: usize,
}

/// Where a copy broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Divergence {
    /// The source position the copy expected to repeat next.
    source: usize,
    /// The history index of the first token that differed.
    output: usize,
    /// The copy run before it.
    run: usize,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The divergence it closed.
    diverged: Divergence,
    /// Whether it added the last entry of `edits`.
    learned: bool,
    matched: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit {
    from: Vec<Token>,
    to: Vec<Token>,
}

// Tuning. The unit tests named below fail when the rule a constant sets is removed (checked by
// disabling each rule in turn when it was added, on traces of SmolLM2 on the rename task).

/// Run-length buckets of the acceptance estimate: runs of 0–1, 2–3, 4–7, 8–15, 16–31, 32+.
const BUCKETS: usize = 6;
/// Prior accepted counts per bucket (one rejection each): copies that have held for longer are
/// more likely to go on holding. Hand-picked; feedback outweighs them within tens of rounds.
const BUCKET_PRIORS: [f64; BUCKETS] = [1.0, 2.0, 3.0, 6.0, 12.0, 20.0];
/// Decay of the per-bucket acceptance counts per round of feedback. Hand-picked, not swept.
const FEEDBACK_DECAY: f64 = 0.95;
/// Shortest match that starts a copy anywhere. Matching 2-grams upward gave SmolLM2 0.97× plain
/// on the rename task, 3-grams upward 1.12× (issue 5, with the drafter of that time).
const DEFAULT_MIN_MATCH: usize = 3;
/// How far from the old alignment a local resynchronisation looks.
const LOCAL_WINDOW: usize = 12;
/// Longest match examined when scoring candidate alignments.
const MAX_MATCH: usize = 64;
/// Edits kept; longer ones are not learned.
const MAX_EDITS: usize = 32;
const MAX_EDIT_LEN: usize = 8;
/// Matching tokens that confirm a local resynchronisation
/// (`a_change_found_one_token_at_a_time_is_learned_as_one_edit`).
const CONFIRM: usize = 2;
/// How far past where a broken copy would be by now a global resynchronisation prefers
/// short matches over long ones elsewhere (rewrites move forward through their source;
/// `a_resync_prefers_a_short_match_ahead_to_a_long_one_in_text_already_copied`).
const FORWARD_WINDOW: usize = 64;
/// Match length for a global resynchronisation on the first token of a divergence
/// (`a_substituted_token_waits_for_the_copy_to_resume_instead_of_jumping`).
const JUMP_MATCH: usize = 8;

fn bucket(run: usize) -> usize {
    match run {
        0..=1 => 0,
        2..=3 => 1,
        4..=7 => 2,
        8..=15 => 3,
        16..=31 => 4,
        _ => 5,
    }
}

impl Default for CopyDrafter {
    fn default() -> Self {
        CopyDrafter {
            min_match: DEFAULT_MIN_MATCH,
            state: None,
            diverged: None,
            pending: None,
            origin: 0,
            edits: Vec::new(),
            run: 0,
            seen: Vec::new(),
            buckets: BUCKET_PRIORS.map(|accepted| Tally::new(accepted, 1.0)),
            last_bucket: 0,
        }
    }
}

impl CopyDrafter {
    /// Shortest earlier occurrence of the recent tokens that may start a copy anywhere in the
    /// history (default 3; near the previous alignment one token suffices).
    pub fn min_match(mut self, n: usize) -> Self {
        self.min_match = n.max(1);
        self
    }

    /// The drafter's current estimate of the per-token acceptance after a copy run of `run`
    /// tokens.
    pub fn acceptance_after(&self, run: usize) -> f64 {
        self.buckets[bucket(run)].rate()
    }

    /// Forgets the alignment and learned edits (the learned acceptance rates stay).
    pub fn reset(&mut self) {
        self.state = None;
        self.diverged = None;
        self.pending = None;
        self.origin = 0;
        self.edits.clear();
        self.run = 0;
        self.seen.clear();
    }

    /// The token the copy predicts at `c` and the cursor after it, applying learned edits.
    fn next(&self, h: &[Token], mut c: Cursor) -> Option<(Token, Cursor)> {
        loop {
            if let Some(Replay { edit: e, offset }) = c.edit {
                let edit = &self.edits[e];
                if let Some(&t) = edit.to.get(offset) {
                    let after = if offset + 1 == edit.to.len() {
                        Cursor { anchor: c.anchor + edit.from.len(), edit: None }
                    } else {
                        Cursor { anchor: c.anchor, edit: Some(Replay { edit: e, offset: offset + 1 }) }
                    };
                    return Some((t, after));
                }
                c = Cursor { anchor: c.anchor + edit.from.len(), edit: None };
                continue;
            }
            let rest = h.get(c.anchor..).filter(|r| !r.is_empty())?;
            // The most recently learned edit that applies here wins.
            match self.edits.iter().rposition(|e| rest.starts_with(&e.from)) {
                Some(e) => c.edit = Some(Replay { edit: e, offset: 0 }),
                None => return Some((rest[0], Cursor { anchor: c.anchor + 1, edit: None })),
            }
        }
    }

    /// Length of the match between the tokens ending at `h[end - 1]` and those ending at
    /// `h[h.len() - 1]`.
    fn match_len(h: &[Token], end: usize) -> usize {
        let n = h.len();
        (0..MAX_MATCH.min(end)).take_while(|&i| h[end - 1 - i] == h[n - 1 - i]).count()
    }

    /// Realigns after the token `h[i]` broke the copy. Returns the new source position and
    /// the run to credit: a copy that resumes near where it diverged (learning the edit) keeps
    /// half its run, a new alignment starts from its match length.
    fn resync(&mut self, h: &[Token]) -> Option<(usize, usize)> {
        let i = h.len() - 1;
        if let Some(d @ Divergence { source: src, output: out, run }) = self.diverged {
            // Near the divergence a single matching token is enough: the longest match wins,
            // then the one closest to where an equal-length substitution would resume.
            let expect = src + (i - out);
            let lo = src.max(1);
            let hi = (expect + LOCAL_WINDOW).min(i);
            let best = (lo..=hi)
                .map(|j| (Self::match_len(h, j), j))
                .filter(|&(l, j)| l >= 1 && j - l >= src && i + 1 - l >= out)
                .max_by_key(|&(l, j)| (l, std::cmp::Reverse(j.abs_diff(expect))));
            if let Some((l, j)) = best {
                let edit = Edit { from: h[src..j - l].to_vec(), to: h[out..=i - l].to_vec() };
                let useful = !edit.from.is_empty() && edit.from.len() <= MAX_EDIT_LEN && edit.to.len() <= MAX_EDIT_LEN;
                let learned = useful && self.edits.len() < MAX_EDITS && !self.edits.contains(&edit);
                if learned {
                    self.edits.push(edit);
                }
                self.pending = Some(Pending { diverged: d, learned, matched: 0 });
                return Some((j, l.max(run / 2)));
            }
        }
        // Anywhere: the longest match; among equals the one nearest where the broken copy
        // would be by now, else the most recent. A rewrite moves forward through its source,
        // so a shorter match just ahead of the broken copy (in the source, not in the copy
        // itself) beats a longer one elsewhere, which is often the output's own copy of text
        // already passed.
        let expect = self.diverged.map_or(i, |d| d.source + (i - d.output));
        // One changed token is more often a substitution (the copy resumes right after it) than
        // a jump elsewhere: on the first token of a divergence only a long match moves it.
        let first = self.diverged.is_some_and(|d| d.output == i);
        let min_match = if first { JUMP_MATCH } else { self.min_match };
        let ahead = |l: usize, j: usize| {
            let window = (expect + FORWARD_WINDOW).min(self.origin);
            !first && l >= 2 && self.diverged.is_some_and(|d| j > d.source && j <= window)
        };
        (1..i + 1)
            .map(|j| (Self::match_len(h, j), j))
            .filter(|&(l, j)| l >= min_match || ahead(l, j))
            .max_by_key(|&(l, j)| (ahead(l, j), l, std::cmp::Reverse(j.abs_diff(expect)), j))
            .map(|(l, j)| (j, l))
    }

    /// Moves the alignment over `h[i]`, the newest token.
    fn follow(&mut self, h: &[Token]) {
        let i = h.len() - 1;
        if self.diverged.is_none() {
            if let Some((t, after)) = self.state.and_then(|c| self.next(&h[..i], c)) {
                if t == h[i] {
                    self.state = Some(after);
                    self.run += 1;
                    if let Some(p) = &mut self.pending {
                        p.matched += 1;
                        if p.matched >= CONFIRM {
                            self.pending = None;
                        }
                    }
                    return;
                }
            }
            if let Some(p) = self.pending.take() {
                if p.learned {
                    self.edits.pop();
                }
                self.diverged = Some(p.diverged);
            } else if let Some(c) = self.state {
                self.diverged = Some(Divergence { source: c.anchor, output: i, run: self.run });
            }
        }
        self.pending = None;
        match self.resync(h) {
            Some((j, run)) => {
                self.state = Some(Cursor { anchor: j, edit: None });
                self.diverged = None;
                self.run = run;
            }
            None => self.run = 0,
        }
    }
}

impl Drafter for CopyDrafter {
    fn begin(&mut self, prompt: &[Token]) {
        if !prompt.starts_with(&self.seen) {
            self.reset();
        }
    }

    fn draft(&mut self, history: &[Token], n: usize) -> Result<Draft, SpeculativeError> {
        // Within a generation the history only grows: checking its length and the last token
        // seen is enough (`begin` compares a new prompt in full).
        let n_seen = self.seen.len();
        if history.len() < n_seen || (n_seen > 0 && history[n_seen - 1] != self.seen[n_seen - 1]) {
            self.reset();
        }
        // Follow the alignment through what was appended since the last call (a new history
        // only needs an alignment for its end).
        let from = if self.seen.is_empty() { history.len().saturating_sub(1) } else { self.seen.len() };
        if self.seen.is_empty() {
            self.origin = from;
        }
        for i in from..history.len() {
            self.follow(&history[..=i]);
        }
        self.seen.extend_from_slice(&history[self.seen.len()..]);
        let mut draft = Draft::default();
        if self.diverged.is_some() {
            return Ok(draft);
        }
        let mut cursor = self.state;
        while draft.tokens.len() < n {
            let Some((t, after)) = cursor.and_then(|c| self.next(history, c)) else { break };
            draft.tokens.push(t);
            cursor = Some(after);
        }
        self.last_bucket = bucket(self.run);
        // Each accepted token lengthens the run, so later positions use longer-run estimates.
        draft.acceptance = (0..draft.tokens.len()).map(|i| self.acceptance_after(self.run + i)).collect();
        Ok(draft)
    }

    fn feedback(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        self.buckets[self.last_bucket].record(drafted, accepted, FEEDBACK_DECAY);
    }

    fn cost_per_token(&self) -> Option<f64> {
        Some(0.0)
    }
}

/// Weight of a new single-token decode in the draft model's running cost per token.
const DECODE_TIME_WEIGHT: f64 = 0.2;

/// Drafts with a smaller model (its own context) that shares the target's vocabulary. It drafts
/// its most likely tokens: the target's sampler decides what is kept, so a draft can only be
/// right or wrong, never change the output.
pub struct DraftModel {
    ctx: Context,
    batch: Batch,
    /// Seconds per single-token decode (running estimate, first measured at construction).
    per_token: f64,
}

impl std::fmt::Debug for DraftModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraftModel").field("model", self.ctx.model()).finish()
    }
}

impl DraftModel {
    /// A greedy draft model. `target` is checked for vocabulary compatibility: same type, size,
    /// special tokens and token texts.
    ///
    /// It times a few single-token decodes here (its cache is left empty), so the controller
    /// knows what a draft token costs before the first draft, which would first have to catch
    /// up on the whole prompt.
    pub fn new(draft: Context, target: &Context) -> Result<Self, SpeculativeError> {
        check_compatible(&draft, target)?;
        let batch = Batch::new(1, 1);
        let mut d = DraftModel { ctx: draft, batch, per_token: 0.0 };
        d.per_token = d.time_decodes()?;
        Ok(d)
    }

    /// The median of three single-token decodes after a first one (which also sets up
    /// buffers).
    fn time_decodes(&mut self) -> Result<f64, SpeculativeError> {
        let token = self.ctx.vocab().bos().unwrap_or(Token(0));
        let mut times = Vec::with_capacity(4);
        for pos in 0..4 {
            times.push(self.timed_decode(token, pos)?);
        }
        self.ctx.kv_seq_rm(0, 0..)?;
        times[1..].sort_by(f64::total_cmp);
        Ok(times[2])
    }

    /// Decodes one token at `pos` (logits out) and returns the seconds it took.
    fn timed_decode(&mut self, token: Token, pos: usize) -> Result<f64, SpeculativeError> {
        self.batch.clear();
        self.batch.add(token, pos, &[0], Logits::Want)?;
        let t = Instant::now();
        self.ctx.decode(&self.batch)?;
        let _ = self.ctx.logits(Output::Last); // reading logits synchronises
        Ok(t.elapsed().as_secs_f64())
    }

    /// Appends `token` at `pos` to the cache, counting its time into the per-token cost.
    fn push_token(&mut self, token: Token, pos: usize) -> Result<(), SpeculativeError> {
        let t = self.timed_decode(token, pos)?;
        self.per_token += DECODE_TIME_WEIGHT * (t - self.per_token);
        Ok(())
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
    for token in d.tokens() {
        if d.text(token).ok() != t.text(token).ok() {
            return mismatch(&format!("text of token {}", token.0));
        }
    }
    Ok(())
}

impl Drafter for DraftModel {
    fn draft(&mut self, history: &[Token], n: usize) -> Result<Draft, SpeculativeError> {
        if history.is_empty() {
            return Err(SpeculativeError::InvalidParam("a draft needs at least one token of history"));
        }
        if history.len().saturating_add(n) > self.ctx.n_ctx() {
            return Err(SpeculativeError::ContextTooSmall { prompt: history.len(), extra: n, n_ctx: self.ctx.n_ctx() });
        }
        // Bring the cache to `history`, keeping the common prefix.
        let cached = self.ctx.cached_tokens(0).unwrap_or(&[]);
        let common = cached.iter().zip(history).take_while(|(a, b)| a == b).count().min(history.len() - 1);
        self.ctx.kv_seq_rm(0, common..)?;
        if history.len() - common == 1 {
            // The usual catch-up after a round (the target's bonus token) is one decode per
            // round, like each further draft token: it is part of a draft token's cost.
            self.push_token(history[common], common)?;
        } else {
            self.ctx.decode_tokens(&history[common..], common, 0)?;
        }
        let mut draft = Draft::default();
        for i in 0..n {
            let logits = self.ctx.logits(Output::Last).ok_or(crate::SampleError::NoLogits(Output::Last))?;
            let token = argmax(logits);
            draft.tokens.push(token);
            if i + 1 < n {
                self.push_token(token, history.len() + i)?;
            }
        }
        Ok(draft)
    }

    fn cost_per_token(&self) -> Option<f64> {
        Some(self.per_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Token> {
        s.split_whitespace()
            .map(|w| Token(w.bytes().fold(0i32, |h, b| h.wrapping_mul(31).wrapping_add(i32::from(b))) & 0xffff))
            .collect()
    }

    #[test]
    fn copies_and_replays_a_learned_rename() {
        let source = "let total = 0 ; for x in xs { total += x ; } print ( total ) ; done";
        let copy = "let grand _total = 0 ; for x in xs { grand _total += x ;";
        let mut d = CopyDrafter::default();
        let mut h = follow_copy(&mut d, &format!("{source} COPY"), copy);
        // After the first rename the drafter knows `total` → `grand _total`.
        let draft = d.draft(&h, 8).unwrap();
        assert_eq!(draft.tokens, toks("} print ( grand _total ) ; done"));
        assert_eq!(draft.acceptance.len(), draft.tokens.len());
        // Following the draft keeps the alignment, through the edit.
        h.extend(toks("} print ( grand"));
        assert_eq!(d.draft(&h, 3).unwrap().tokens, toks("_total ) ;"));
    }

    /// Feeds `copy` to the drafter one token at a time after `source`, as during decoding.
    fn follow_copy(d: &mut CopyDrafter, source: &str, copy: &str) -> Vec<Token> {
        let mut h = toks(source);
        for t in toks(copy) {
            h.push(t);
            d.draft(&h, 4).unwrap();
        }
        h
    }

    #[test]
    fn a_change_found_one_token_at_a_time_is_learned_as_one_edit() {
        // The source's `NN` (one token) comes out as `N N` (two): the first `N` looks like a
        // deletion of `NN` until the second one arrives.
        let source = "def a : ret NN N def b : ret NN N def c : ret NN N def d : ret";
        let mut d = CopyDrafter::default();
        let h = follow_copy(&mut d, &format!("{source} COPY"), "def a : ret N N def b : ret");
        assert_eq!(d.draft(&h, 5).unwrap().tokens, toks("N N def c :"));
    }

    #[test]
    fn a_substituted_token_waits_for_the_copy_to_resume_instead_of_jumping() {
        // `( x , new` also occurs further on; a jump there would draft `: D`.
        let filler: String = (0..30).map(|i| format!(" f{i}")).collect();
        let source = format!("A ( x , old ) : B ; {filler} C ( x , new ) : D ;");
        let mut d = CopyDrafter::default();
        let h = follow_copy(&mut d, &format!("{source} COPY"), "A ( x , new )");
        assert_eq!(d.draft(&h, 2).unwrap().tokens, toks(": B"));
    }

    #[test]
    fn a_resync_prefers_a_short_match_ahead_to_a_long_one_in_text_already_copied() {
        let gap: String = (0..20).map(|i| format!(" g{i}")).collect();
        let filler: String = (0..80).map(|i| format!(" f{i}")).collect();
        // Source: ... m3 <gap> c d e ...; earlier output: w0 y c d Z; now: w1 y c d.
        let h = toks(&format!("m0 m1 m2 m3 {gap} c d e m4 {filler} w0 y c d Z w1 y c d"));
        let (src, i) = (3, h.len() - 1);
        let origin = h.len() - 9;
        let diverged = Divergence { source: src, output: i - 2, run: 8 };
        let mut d = CopyDrafter { diverged: Some(diverged), origin, ..CopyDrafter::default() };
        let (j, _) = d.resync(&h).unwrap();
        assert_eq!(h[j], toks("e")[0], "realigned to {j}");
    }

    #[test]
    fn no_alignment_no_draft_and_a_new_history_resets() {
        let mut d = CopyDrafter::default();
        assert!(d.draft(&toks("a b c d e f"), 4).unwrap().tokens.is_empty());
        let h = toks("a b c d e f a b c");
        assert_eq!(d.draft(&h, 2).unwrap().tokens, toks("d e"));
        // A history that does not extend the last one starts over.
        assert_eq!(d.draft(&toks("x y z x y"), 2).unwrap().tokens, Vec::<Token>::new());
        assert_eq!(d.draft(&toks("p q r s p q r"), 1).unwrap().tokens, toks("s"));
    }

    #[test]
    fn a_new_prompt_is_told_from_a_continuation_in_begin() {
        let mut d = CopyDrafter::default();
        let h = toks("a b c d e f a b c");
        assert_eq!(d.draft(&h, 2).unwrap().tokens, toks("d e"));
        // A continuation keeps the alignment.
        let mut more = h.clone();
        more.extend(toks("d e"));
        d.begin(&more);
        assert_eq!(d.draft(&more, 1).unwrap().tokens, toks("f"));
        // Same length and last token, other text: only `begin` can tell, and starts over.
        let other = toks("x y x y x y x y z z e");
        d.begin(&other);
        assert!(d.draft(&other, 2).unwrap().tokens.is_empty());
    }

    #[test]
    fn acceptance_estimates_learn_from_feedback() {
        let mut d = CopyDrafter::default();
        let h = toks("a b c d e f g a b c");
        let before = d.draft(&h, 4).unwrap().acceptance[0];
        for _ in 0..20 {
            d.feedback(4, 0);
        }
        let after = d.draft(&h, 4).unwrap().acceptance[0];
        assert!(after < before / 2.0, "{before} -> {after}");
    }
}
