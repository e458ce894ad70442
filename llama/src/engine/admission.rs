//! Admission and preemption: which waiting job starts, in which slot and from which cached
//! prefix, and what gives way when the KV pool runs out.
//!
//! KV cells are taken on demand, not reserved for the worst case: a job starts when its input
//! fits beside what the running jobs hold and still have to read. When the pool fills during
//! generation, idle slots' prefixes go first (saved to the RAM tier), then the newest job is
//! preempted: its cache is saved to RAM (or dropped, to be recomputed), it goes back to the
//! front of the queue and resumes where it stopped when room returns. Its consumer sees a pause,
//! never a cut.

use std::time::Instant;

use super::kv::RAM_MIN_GAIN;
use super::request::Event;
use super::slots::{self, Job, Source};
use super::worker::Worker;

/// A preempted job resumes only when its input fits with this share of the pool to spare, so it
/// is not preempted again at once.
const RESUME_HEADROOM: usize = 8;

impl Worker {
    /// Starts waiting jobs while slots and KV room allow, in queue order.
    pub(super) fn admit(&mut self) {
        let n_ctx = self.ctx.n_ctx();
        while let Some(next) = self.queue.front() {
            let free = self.slots.iter().filter(|s| s.idle()).count();
            if free < 1 + next.forks.len() {
                return;
            }
            // Cells the running jobs hold, plus the prompt they still have to read, plus a token
            // per slot for the next step. Idle slots' prefixes do not count: they give way.
            let held = self.pool.used_by(|seq| self.slots.iter().any(|s| s.seq == seq && s.job.is_some()));
            let to_read: usize =
                self.slots.iter().filter_map(|s| s.job.as_ref()).map(|j| j.input.len() - j.n_past).sum();
            let headroom = if next.admitted.is_some() { n_ctx / RESUME_HEADROOM } else { 0 };
            let wants = next.input.len() + headroom + self.slots.len();
            // With nothing running, a job always starts: the cache is all its own.
            if self.running() && held + to_read + wants > n_ctx {
                return;
            }
            let Some(job) = self.queue.pop_front() else { return };
            self.start(job);
        }
    }

    fn start(&mut self, mut job: Job) {
        let Some((slot, source)) = slots::choose(&self.slots, &self.ctx, &self.pool, &job.input) else {
            self.queue.push_front(job);
            return;
        };
        let seq = self.slots[slot].seq;
        // A slot's cache goes to RAM before it is cut, when what is cut is worth a restore.
        let keep = match source {
            Source::Own(c) => c,
            _ => 0,
        };
        if self.pool.len(seq) >= keep + RAM_MIN_GAIN {
            self.pool.save(&self.ctx, seq);
        }
        let common = match source {
            Source::Own(c) => self.pool.truncate(&mut self.ctx, seq, c),
            Source::Busy { slot: donor, common } => {
                let src = self.slots[donor].seq;
                self.pool.share(&mut self.ctx, src, seq, common)
            }
            Source::Ram { entry, common } => {
                // The whole entry comes in before it is cut to the shared part: idle prefixes
                // make room for it.
                self.pool.clear(&mut self.ctx, seq);
                let n_ctx = self.ctx.n_ctx();
                while self.pool.used() + self.pool.entry_len(entry) > n_ctx && self.evict_idle(slot) {}
                self.pool.restore(&mut self.ctx, seq, entry, common)
            }
        };
        // A medium is evaluated whole: a prefix that ends inside one stops at its start.
        let common = match job.media.as_ref().map(|m| m.boundary(common)) {
            Some(whole) if whole < common => self.pool.truncate(&mut self.ctx, seq, whole),
            _ => common,
        };
        if !matches!(source, Source::Ram { .. }) {
            self.pool.missed();
        }
        job.n_past = common;
        for _ in 0..job.forks.len() {
            if let Some(f) = (0..self.slots.len()).find(|&i| i != slot && self.slots[i].idle()) {
                self.slots[f].held_for_fork = true;
                job.fork_slots.push(f);
            }
        }
        job.forks.truncate(job.fork_slots.len());
        if job.admitted.is_none() {
            self.next_id += 1;
            job.id = self.next_id;
            job.admitted = Some(Instant::now());
            job.cached = common;
            self.shared.queued.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            job.send(Event::Started { prompt_tokens: job.prompt.len(), cached_tokens: common });
            let prompt = job.prompt.len() as u64;
            self.metrics(|m| {
                m.requests += 1;
                m.prompt_tokens += prompt;
                m.cached_tokens += common as u64;
            });
        } else {
            self.metrics(|m| m.resumed += 1);
        }
        self.slots[slot].job = Some(job);
        self.slots[slot].last_used = self.step;
    }

    /// Frees cells for the next step: the least recently used idle slot's prefix (saved to
    /// RAM), else the newest running job is preempted. False when neither is possible (one job
    /// runs alone: what it needs is more than the pool).
    pub(super) fn make_room(&mut self) -> bool {
        if self.evict_idle(usize::MAX) {
            return true;
        }
        let running = (0..self.slots.len()).filter(|&i| self.slots[i].job.is_some());
        if running.clone().count() < 2 {
            return false;
        }
        match running.max_by_key(|&i| self.slots[i].job.as_ref().map(|j| (j.id, j.index))) {
            Some(i) => {
                self.preempt(i);
                true
            }
            None => false,
        }
    }

    /// Saves to RAM and removes the cache of the least recently used idle slot other than
    /// `except`; false if none holds anything.
    fn evict_idle(&mut self, except: usize) -> bool {
        let victim = self
            .slots
            .iter()
            .enumerate()
            .filter(|&(i, s)| i != except && s.job.is_none() && self.pool.len(s.seq) > 0)
            .min_by_key(|(_, s)| s.last_used)
            .map(|(_, s)| s.seq);
        let Some(seq) = victim else { return false };
        self.pool.save(&self.ctx, seq);
        self.pool.clear(&mut self.ctx, seq);
        true
    }

    /// Takes the job out of `slot` and queues it in front, its cache saved to RAM if the tier
    /// has room (else it reads its input again when it resumes).
    fn preempt(&mut self, slot: usize) {
        let Some(mut job) = self.slots[slot].job.take() else { return };
        for f in job.fork_slots.drain(..) {
            self.slots[f].held_for_fork = false;
        }
        let seq = self.slots[slot].seq;
        self.pool.save(&self.ctx, seq);
        self.pool.clear(&mut self.ctx, seq);
        // Its sampled token joins the input: once re-read, the logits after it come next.
        if let Some(token) = job.pending.take() {
            job.input.push(token);
        }
        job.n_past = 0;
        self.metrics(|m| m.preemptions += 1);
        self.queue.push_front(job);
    }
}
