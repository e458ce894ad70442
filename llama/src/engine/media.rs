//! Images and audio in engine prompts: where a prompt's media stand, so the worker evaluates
//! each through the projector when its sequence reaches it and prefix reuse never stops inside
//! one.
//!
//! A medium occupies its positions in the prompt's token list as placeholders derived from its
//! SHA-256 (`media::media_entries`), as the context's ledger records them once evaluated: a
//! cached prefix matches an image only when it holds the same image.

/// The media of one prompt: where each stands, and (with `mtmd`) what to evaluate there.
pub(crate) struct PromptMedia {
    /// In prompt order, not overlapping.
    pub spans: Vec<Span>,
    #[cfg(feature = "mtmd")]
    pub chunks: crate::media::Chunks,
}

impl std::fmt::Debug for PromptMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptMedia").field("spans", &self.spans).finish()
    }
}

/// One medium's positions in the prompt, and its chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub len: usize,
    /// Index into the prompt's chunks.
    pub chunk: usize,
}

impl PromptMedia {
    /// The medium that starts at `pos`, if one does.
    #[cfg(any(test, feature = "mtmd"))]
    pub fn at(&self, pos: usize) -> Option<Span> {
        self.spans.iter().copied().find(|s| s.start == pos)
    }

    /// Where the first medium at or after `pos` starts: text up to there can be batched.
    pub fn next_start(&self, pos: usize) -> Option<usize> {
        self.spans.iter().map(|s| s.start).find(|&s| s >= pos)
    }

    /// The longest reusable prefix of at most `n` positions: a prefix that ends inside a medium
    /// stops at its start (a medium is evaluated whole).
    pub fn boundary(&self, n: usize) -> usize {
        self.spans.iter().find(|s| s.start < n && n < s.start + s.len).map_or(n, |s| s.start)
    }
}

#[cfg(feature = "mtmd")]
impl super::worker::Worker {
    /// Reads the next medium a sequence has reached, one per step in round-robin order: through
    /// the projector and into the context outside the step's batch (llama.cpp decodes
    /// embeddings and tokens in separate batches).
    pub(super) fn read_due_media(&mut self) {
        let Some(projector) = self.projector.clone() else { return };
        let n = self.slots.len().max(1);
        let due = |w: &Self, i: usize| w.slots[i].job.as_ref().and_then(|j| j.media_due());
        let Some(i) = (0..n).map(|k| (self.cursor + k) % n).find(|&i| due(self, i).is_some()) else { return };
        let Some(span) = due(self, i) else { return };
        // As for a step's batch: free room until the medium fits, or give up this step.
        while self.pool.used() + span.len > self.ctx.n_ctx() {
            if !self.make_room() {
                return;
            }
        }
        // Making room may have preempted this very job.
        let (seq, step) = (self.slots[i].seq, self.step);
        let Some(job) = self.slots[i].job.as_mut().filter(|j| j.media_due() == Some(span)) else { return };
        let Some(media) = job.media.clone() else { return };
        let pos = job.n_past;
        let read = match media.chunks.get(span.chunk) {
            Some(chunk) => projector.eval_media(&mut self.ctx, chunk, pos, seq).map_err(|e| e.to_string()),
            None => Err("a medium's chunk is missing".into()),
        };
        match read {
            Ok(next) if next == pos + span.len => {
                job.n_past = next;
                self.pool.decoded(seq, span.len);
                self.slots[i].last_used = step;
                self.metrics(|m| m.media_read += 1);
            }
            Ok(next) => {
                let msg = format!("a medium took positions {pos}..{next}, not the {} expected", span.len);
                self.end(i, super::worker::Outcome::Failed(super::FailureKind::Engine, msg));
            }
            Err(msg) => self.end(i, super::worker::Outcome::Failed(super::FailureKind::Engine, msg)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{PromptMedia, Span};

    fn media(spans: &[(usize, usize)]) -> PromptMedia {
        PromptMedia {
            spans: spans.iter().enumerate().map(|(chunk, &(start, len))| Span { start, len, chunk }).collect(),
            #[cfg(feature = "mtmd")]
            chunks: unreachable_chunks(),
        }
    }

    #[cfg(feature = "mtmd")]
    fn unreachable_chunks() -> crate::media::Chunks {
        crate::media::Chunks::empty().expect("an empty chunk list")
    }

    #[test]
    fn prefixes_stop_at_a_medium_they_would_cut() {
        let m = media(&[(3, 16), (25, 4)]);
        assert_eq!(m.boundary(2), 2);
        assert_eq!(m.boundary(3), 3);
        assert_eq!(m.boundary(4), 3);
        assert_eq!(m.boundary(18), 3);
        assert_eq!(m.boundary(19), 19);
        assert_eq!(m.boundary(27), 25);
        assert_eq!(m.boundary(40), 40);
        assert_eq!(m.next_start(0), Some(3));
        assert_eq!(m.next_start(4), Some(25));
        assert_eq!(m.next_start(26), None);
        assert_eq!(m.at(25).map(|s| s.len), Some(4));
        assert_eq!(m.at(4), None);
    }
}
