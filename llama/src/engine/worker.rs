//! The engine thread: its loop, and what one step does — build the batch, decode, sample each
//! sequence that has logits, end what is finished.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use super::kv::Pool;
use super::request::{Event, FailureKind, RequestTimings, Usage};
use super::scheduler::{self, Pacer};
use super::slots::{Job, Slot};
use super::{Command, Metrics, Shared};
use crate::error::DecodeError;
use crate::generate::FinishReason;
use crate::{Batch, Context, Output};

/// How a job ends.
#[derive(Debug)]
pub(super) enum Outcome {
    Finished(FinishReason),
    Failed(FailureKind, String),
}

/// The engine thread's state. Only this thread touches the context.
pub(super) struct Worker {
    pub ctx: Context,
    pub pool: Pool,
    pub slots: Vec<Slot>,
    /// Waiting for a slot and for room in the KV pool: new jobs in arrival order, preempted ones
    /// in front.
    pub queue: VecDeque<Job>,
    pub rx: std_mpsc::Receiver<Command>,
    pub shared: Arc<Shared>,
    pub batch: Batch,
    pub pacer: Pacer,
    /// Round-robin position of the prefill budget.
    pub cursor: usize,
    pub step: u64,
    pub next_id: u64,
    pub stopping: bool,
    /// A consumer that has read nothing for this long is cancelled.
    pub stall_timeout: Option<Duration>,
    /// Ended jobs whose last events wait for their consumer.
    pub draining: Vec<Job>,
    /// Reads the images and audio of prompts.
    #[cfg(feature = "mtmd")]
    pub projector: Option<Arc<crate::media::Projector>>,
}

impl Worker {
    pub fn run(&mut self) {
        while !self.stopping {
            // A panic here (a bug, never a caller's input) must not kill the server: fail the
            // requests in flight and start clean.
            if let Err(message) = crate::barrier::catch_panic(|| self.tick()) {
                self.fail_all(&format!("internal error in the engine: {message}"));
                self.ctx.clear_kv();
                self.pool.reset();
            }
        }
        self.shared.stopped.store(true, Ordering::Relaxed);
        while let Some(job) = self.queue.pop_front() {
            self.finish(job, Outcome::Finished(FinishReason::Shutdown));
        }
        for i in 0..self.slots.len() {
            self.end(i, Outcome::Finished(FinishReason::Shutdown));
        }
    }

    /// Whether any job holds a slot.
    pub fn running(&self) -> bool {
        self.slots.iter().any(|s| s.job.is_some())
    }

    fn tick(&mut self) {
        self.receive();
        self.reap();
        self.admit();
        if !self.run_step() {
            // Nothing to decode: wait for a submission rather than spin (a paused consumer's
            // backlog is retried every few milliseconds).
            let busy = self.running() || !self.draining.is_empty();
            let wait = if busy { Duration::from_millis(2) } else { Duration::from_millis(50) };
            match self.rx.recv_timeout(wait) {
                Ok(cmd) => self.command(cmd),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => self.stopping = self.queue.is_empty() && !busy,
            }
        }
        self.publish();
    }

    fn receive(&mut self) {
        while let Ok(cmd) = self.rx.try_recv() {
            self.command(cmd);
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit(job) => self.queue.push_back(*job),
            Command::Shutdown => self.stopping = true,
        }
    }

    /// Ends what nobody waits for any more, what ran out of time (queued or running) and what
    /// a consumer stopped reading; retries backlogs.
    fn reap(&mut self) {
        let now = Instant::now();
        let stall = self.stall_timeout;
        let stalled = |job: &Job| stall.zip(job.stalled_since).is_some_and(|(t, since)| now - since >= t);
        // An ended job's last events (at most a buffer's worth and `Done`) wait for its consumer
        // as long as the stream is open, a stalled one's too: the slot is already free.
        self.draining.retain_mut(|job| {
            job.flush();
            !job.backlog.is_empty() && !job.tx.is_closed()
        });
        let verdict = |job: &Job| {
            if job.abandoned() {
                Some(FinishReason::Cancelled)
            } else if job.deadline.is_some_and(|d| now >= d) {
                Some(FinishReason::Deadline)
            } else if stalled(job) {
                Some(FinishReason::Stalled)
            } else {
                None
            }
        };
        for i in 0..self.slots.len() {
            let Some(job) = self.slots[i].job.as_mut() else { continue };
            job.flush();
            if let Some(reason) = verdict(job) {
                if reason == FinishReason::Stalled {
                    self.metrics(|m| m.stalled += 1);
                }
                self.end(i, Outcome::Finished(reason));
            }
        }
        let mut kept = VecDeque::with_capacity(self.queue.len());
        while let Some(mut job) = self.queue.pop_front() {
            job.flush();
            match verdict(&job) {
                Some(reason) => self.finish(job, Outcome::Finished(reason)),
                None => kept.push_back(job),
            }
        }
        self.queue = kept;
    }

    /// One decode: returns false when there was nothing to do.
    fn run_step(&mut self) -> bool {
        #[cfg(feature = "mtmd")]
        self.read_due_media();
        let n_ctx = self.ctx.n_ctx();
        let (outputs, added) = loop {
            let plan = scheduler::plan(&self.slots, &mut self.batch, &self.pacer, &mut self.cursor);
            let (outputs, added) = match plan {
                Ok(plan) => plan,
                Err(e) => {
                    self.fail_all(&format!("could not build a batch: {e}"));
                    return false;
                }
            };
            if self.batch.is_empty() {
                return false;
            }
            // Make the room this step needs before llama.cpp finds it missing.
            if self.pool.used() + self.batch.len() <= n_ctx || !self.make_room() {
                break (outputs, added);
            }
        };
        self.step += 1;
        let (mut generated, mut prompt) = (0, 0);
        for (slot, &n) in self.slots.iter().zip(&added) {
            match &slot.job {
                Some(job) if n > 0 && job.prefilling() => prompt += n,
                Some(_) if n > 0 => generated += n,
                _ => {}
            }
        }
        let started = Instant::now();
        match self.ctx.decode(&self.batch) {
            Ok(()) => {}
            Err(DecodeError::NoKvSlot) => {
                // The pool is full after all: free what can be freed, or end the newest
                // sequence of this step, never all of them.
                if !self.make_room() {
                    let newest = (0..self.slots.len())
                        .filter(|&i| added[i] > 0)
                        .max_by_key(|&i| self.slots[i].job.as_ref().map_or((0, 0), |j| (j.id, j.index)));
                    if let Some(i) = newest {
                        self.end(i, Outcome::Finished(FinishReason::ContextFull));
                    }
                }
                return true;
            }
            Err(e) => {
                let msg = format!("decode failed: {e}");
                for i in (0..self.slots.len()).filter(|&i| added[i] > 0) {
                    self.end(i, Outcome::Failed(FailureKind::Engine, msg.clone()));
                }
                return true;
            }
        }
        let sequences = added.iter().filter(|&&n| n > 0).count();
        self.metrics(|m| {
            m.decode_steps += 1;
            m.max_step_sequences = m.max_step_sequences.max(sequences);
        });
        for (i, &n) in added.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let slot = &mut self.slots[i];
            slot.last_used = self.step;
            self.pool.decoded(slot.seq, n);
            if let Some(job) = slot.job.as_mut() {
                if let Some(token) = job.pending.take() {
                    job.input.push(token);
                }
                job.n_past += n;
            }
        }
        for out in outputs {
            // Forks take their first token from the same logits as the completion they copy.
            let forks = self.fork(out.slot);
            self.sample(out.slot, out.batch_index);
            for f in forks {
                self.sample(f, out.batch_index);
            }
        }
        // Sampling read the logits, so the computation is over: this is the step's whole cost.
        self.pacer.observe(started.elapsed().as_secs_f64(), generated, prompt);
        true
    }

    /// Once `slot`'s prompt is decoded, starts its request's other completions on shared
    /// copies of it; returns their slots.
    fn fork(&mut self, slot: usize) -> Vec<usize> {
        let src = self.slots[slot].seq;
        let Some(job) = self.slots[slot].job.as_mut() else { return Vec::new() };
        let forks = std::mem::take(&mut job.forks);
        let fork_slots = std::mem::take(&mut job.fork_slots);
        let n = job.n_past;
        let mut started = Vec::new();
        for ((index, sampler), f) in forks.into_iter().zip(fork_slots) {
            self.slots[f].held_for_fork = false;
            let Some(parent) = self.slots[slot].job.as_ref() else { break };
            let mut fork = parent.fork(index, sampler);
            let seq = self.slots[f].seq;
            if self.pool.share(&mut self.ctx, src, seq, n) < n {
                let (kind, message) = (FailureKind::Engine, "could not share the prompt".into());
                fork.send(Event::Error { index, kind, message });
                continue;
            }
            self.slots[f].job = Some(fork);
            self.slots[f].last_used = self.step;
            started.push(f);
        }
        started
    }

    /// Samples the next token of `slot` from output `idx` of this step and emits it.
    fn sample(&mut self, slot: usize, idx: usize) {
        let n_ctx = self.ctx.n_ctx();
        let Some(job) = self.slots[slot].job.as_mut() else { return };
        if !job.driver.may_continue() {
            let reason = job.driver.finish_reason().unwrap_or(FinishReason::Cancelled);
            self.end(slot, Outcome::Finished(reason));
            return;
        }
        if job.n_past >= n_ctx {
            self.end(slot, Outcome::Finished(FinishReason::ContextFull));
            return;
        }
        let token = match job.sampler.sample(&self.ctx, Output::At(idx)) {
            Ok(t) => t,
            Err(e) => {
                self.end(slot, Outcome::Failed(FailureKind::Sampling, format!("sampling failed: {e}")));
                return;
            }
        };
        let logits = if job.driver.wants_logprobs() { self.ctx.logits(Output::At(idx)) } else { None };
        let piece = match job.driver.push(&self.ctx.vocab(), token, logits) {
            Ok(p) => p,
            Err(e) => {
                self.end(slot, Outcome::Failed(FailureKind::Engine, e.to_string()));
                return;
            }
        };
        let now = Instant::now();
        let (submitted, last) = (job.submitted, job.last_token.replace(now));
        let paused = std::mem::take(&mut job.paused);
        if job.first_token.is_none() {
            job.first_token = Some(now);
        }
        let Some(piece) = piece else {
            let reason = job.driver.finish_reason().unwrap_or(FinishReason::Eog);
            self.end(slot, Outcome::Finished(reason));
            return;
        };
        job.pending = Some(token);
        let index = job.index;
        job.send(Event::Piece { index, piece });
        let finished = job.driver.finish_reason();
        self.metrics(|m| {
            m.generated_tokens += 1;
            match last {
                Some(_) if paused => {}
                Some(t) => m.inter_token_latency.observe(now - t),
                None => m.time_to_first_token.observe(now - submitted),
            }
        });
        if let Some(reason) = finished {
            self.end(slot, Outcome::Finished(reason));
        }
    }

    /// Ends the job in `slot` and frees the slot. Its cache stays for prefix reuse, up to what
    /// was decoded (all of it goes after an error or a full context).
    pub fn end(&mut self, slot: usize, outcome: Outcome) {
        let Some(mut job) = self.slots[slot].job.take() else { return };
        for f in job.fork_slots.drain(..) {
            self.slots[f].held_for_fork = false;
        }
        let seq = self.slots[slot].seq;
        match outcome {
            Outcome::Finished(FinishReason::ContextFull) | Outcome::Failed(..) => self.pool.clear(&mut self.ctx, seq),
            Outcome::Finished(_) => {
                self.pool.truncate(&mut self.ctx, seq, job.n_past);
            }
        }
        job.forks.clear();
        // Gauges first: whoever reads the metrics after this job's `Done` sees the slot freed.
        self.publish();
        self.finish(job, outcome);
    }

    /// A job's last events: the held-back text and `Done`, or `Error`.
    pub fn finish(&mut self, mut job: Job, outcome: Outcome) {
        let index = job.index;
        if job.admitted.is_none() {
            // Never ran: it leaves the queue's count here.
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
        }
        let reason = match outcome {
            Outcome::Failed(kind, message) => {
                job.send(Event::Error { index, kind, message });
                None
            }
            Outcome::Finished(finish) => {
                if let Some(piece) = job.driver.flush() {
                    job.send(Event::Piece { index, piece });
                }
                let usage = Usage {
                    prompt_tokens: job.prompt.len(),
                    cached_tokens: job.cached,
                    completion_tokens: job.driver.generated(),
                };
                let admitted = job.admitted.unwrap_or_else(Instant::now);
                let timings = RequestTimings {
                    queued: admitted - job.submitted,
                    time_to_first_token: job.first_token.map_or(Duration::ZERO, |t| t - job.submitted),
                    total: job.submitted.elapsed(),
                };
                let stop = job.driver.stop_sequence().map(str::to_string);
                job.send(Event::Done { index, finish, stop, usage, timings });
                Some(finish)
            }
        };
        self.metrics(|m| m.finished.count(reason));
        // A consumer that is behind still gets its last events, as it reads.
        if !job.backlog.is_empty() && !job.tx.is_closed() {
            self.draining.push(job);
        }
    }

    pub fn fail_all(&mut self, message: &str) {
        for i in 0..self.slots.len() {
            self.end(i, Outcome::Failed(FailureKind::Engine, message.to_string()));
            self.slots[i].held_for_fork = false;
        }
    }

    pub fn metrics(&self, f: impl FnOnce(&mut Metrics)) {
        f(&mut self.shared.metrics.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Gauges, refreshed once per tick.
    pub fn publish(&self) {
        let busy = self.slots.iter().filter(|s| s.job.is_some()).count();
        let cells = self.pool.used();
        let ram = self.pool.stats();
        self.metrics(|m| {
            m.slots_busy = busy;
            m.max_slots_busy = m.max_slots_busy.max(busy);
            m.kv_cells_used = cells;
            m.prefix_cache = ram;
        });
    }
}
