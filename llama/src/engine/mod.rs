//! Serving many requests over one model: continuous batching inside the library.
//!
//! An [`Engine`] owns one [`Context`] with `slots` sequences (a unified KV cache) on its own
//! thread. Any thread or task submits [`Request`]s through a cloneable [`EngineHandle`]; each
//! gets its own [`Completion`] stream of [`Event`]s. Every step decodes one token for each
//! generating sequence, then spends a bounded prefill budget on prompts still being read, so a
//! long prompt never stalls the others for more than one chunk.
//!
//! ```no_run
//! use llama::engine::{Engine, EngineParams, Event, Request};
//! let model = llama::Model::load("model.gguf")?;
//! let engine = Engine::new(&model, EngineParams::default().slots(4))?;
//! let handle = engine.handle(); // Clone + Send + Sync: give one to each thread or task
//! for event in handle.submit(Request::new("The capital of France is"))? {
//!     if let Event::Piece { piece, .. } = event { print!("{piece}"); }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What it promises:
//! - **Cancellation**: dropping a [`Completion`] (or [`Completion::cancel`]) frees its slot
//!   within one step; no other request is touched (the context-wide abort callback is never
//!   used for one request).
//! - **Backpressure**: the engine never waits for a consumer. One that stops reading pauses
//!   only its own sequence once its buffer is full.
//! - **Admission by tokens**: a request reserves `prompt + n × max_tokens` cells of the KV
//!   pool, so admitted requests do not overcommit it; idle slots' cached prefixes are evicted
//!   first (least recently used). If the cache fills anyway, only the newest sequence ends
//!   ([`FinishReason::ContextFull`]). The queue is bounded: a full one answers
//!   [`SubmitError::Busy`] at once.
//! - **Prefix reuse**: a request takes the idle slot whose cache shares the longest prefix
//!   with its prompt (or copies a longer one from a busy slot), and reports the cached tokens.
//! - **Isolation**: a request's own failure (a grammar dead end, a panicking Rust sampler)
//!   ends that request only.

mod embeddings;
mod metrics;
mod request;
mod scheduler;
mod slots;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use embeddings::{Embeddings, PendingEmbeddings};
pub use metrics::{Finished, Histogram, Metrics, LATENCY_BUCKETS};
pub use request::{Completion, Event, Events, Prompt, Request, RequestTimings, SubmitError, Usage};

use crate::driver::Driver;
use crate::error::{ContextError, DecodeError};
use crate::generate::FinishReason;
use crate::{Batch, Context, ContextParams, Model, Output, Sampler, Token};
use slots::{Job, Slot};

/// How an [`Engine`] is set up: read the options as fields, set them with the chaining setters
/// of the same names (or assign the fields). Out-of-range values are brought into range when the
/// engine starts (each field says how).
///
/// ```
/// let params = llama::engine::EngineParams::default().slots(8).n_ctx(8192).max_queue(64);
/// assert_eq!(params.slots, 8);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
#[must_use]
pub struct EngineParams {
    /// Sequences decoded together (default 4; 1..=256, llama.cpp's limit).
    pub slots: usize,
    /// KV cache size in tokens, shared by all slots (default 4096; at least 16).
    pub n_ctx: usize,
    /// Threads for decoding (default `None`: the available cores; at least 1).
    pub threads: Option<usize>,
    /// Most prompt tokens decoded in one step, shared by the prompts being read (default 256; at
    /// least 1). The whole budget is used only while no sequence generates; otherwise see
    /// [`prefill_slowdown`](Self::prefill_slowdown).
    pub prefill_budget: usize,
    /// While sequences generate, a step that also reads prompts may take at most this many times
    /// a decode-only step (default 2; at least 1, and 2 if not finite): the prompt chunk is sized
    /// from measured costs to fit. Lower keeps running streams smoother while a long prompt is
    /// read; higher gives that prompt its first token sooner.
    pub prefill_slowdown: f64,
    /// Requests that may wait for a slot (default 64); beyond, [`SubmitError::Busy`].
    pub max_queue: usize,
    /// Events buffered per request before its sequence pauses for the consumer (default 64; at
    /// least 1).
    pub stream_buffer: usize,
    /// The context parameters to start from (flash attention, KV cache types, ...; default: the
    /// engine's choice); the engine still sets the size, sequences, batch and a unified cache.
    pub context_params: Option<ContextParams>,
}

impl Default for EngineParams {
    fn default() -> Self {
        EngineParams {
            slots: 4,
            n_ctx: 4096,
            threads: None,
            prefill_budget: 256,
            prefill_slowdown: 2.0,
            max_queue: 64,
            stream_buffer: 64,
            context_params: None,
        }
    }
}

impl EngineParams {
    /// Sets [`slots`](Self::slots).
    pub fn slots(mut self, n: usize) -> Self {
        self.slots = n;
        self
    }

    /// Sets [`n_ctx`](Self::n_ctx).
    pub fn n_ctx(mut self, n: usize) -> Self {
        self.n_ctx = n;
        self
    }

    /// Sets [`threads`](Self::threads).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// Sets [`prefill_budget`](Self::prefill_budget).
    pub fn prefill_budget(mut self, n: usize) -> Self {
        self.prefill_budget = n;
        self
    }

    /// Sets [`prefill_slowdown`](Self::prefill_slowdown).
    pub fn prefill_slowdown(mut self, factor: f64) -> Self {
        self.prefill_slowdown = factor;
        self
    }

    /// Sets [`max_queue`](Self::max_queue).
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = n;
        self
    }

    /// Sets [`stream_buffer`](Self::stream_buffer).
    pub fn stream_buffer(mut self, n: usize) -> Self {
        self.stream_buffer = n;
        self
    }

    /// Sets [`context_params`](Self::context_params).
    pub fn context_params(mut self, params: ContextParams) -> Self {
        self.context_params = Some(params);
        self
    }

    /// Every option brought into its documented range.
    fn in_range(mut self) -> Self {
        self.slots = self.slots.clamp(1, 256);
        self.n_ctx = self.n_ctx.max(16);
        self.threads = self.threads.map(|n| n.max(1));
        self.prefill_budget = self.prefill_budget.max(1);
        self.prefill_slowdown = if self.prefill_slowdown.is_finite() { self.prefill_slowdown.max(1.0) } else { 2.0 };
        self.stream_buffer = self.stream_buffer.max(1);
        self
    }
}

/// A running engine. Dropping it stops the engine thread: requests still running end with
/// [`FinishReason::Cancelled`].
#[derive(Debug)]
pub struct Engine {
    handle: EngineHandle,
    thread: Option<JoinHandle<()>>,
}

/// Submits requests to an [`Engine`] from any thread or task.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: std_mpsc::Sender<Command>,
    shared: Arc<Shared>,
    model: Model,
    n_ctx: usize,
    slots: usize,
    max_queue: usize,
    stream_buffer: usize,
}

#[derive(Debug, Default)]
struct Shared {
    metrics: Mutex<Metrics>,
    queued: AtomicUsize,
    stopped: AtomicBool,
}

enum Command {
    Submit(Submission),
    Shutdown,
}

struct Submission {
    prompt: Arc<[Token]>,
    samplers: Vec<Sampler>,
    params: crate::GenerateParams,
    deadline: Option<Instant>,
    tx: mpsc::Sender<Event>,
    cancel: Arc<AtomicBool>,
    submitted: Instant,
}

impl Engine {
    /// Creates the context and starts the engine thread.
    pub fn new(model: &Model, params: EngineParams) -> Result<Engine, ContextError> {
        let params = params.in_range();
        let threads = params.threads.unwrap_or_else(crate::context::default_threads);
        let n_batch = (params.prefill_budget + params.slots).max(params.slots * 2);
        // On a CPU, flash attention over a unified cache made a step of 3 streams plus a few
        // prompt tokens ~20× slower once a 1,500-token prompt sat in the cache (benches/engine.rs
        // fairness: p99 1.7 s vs 0.1 s without it). GPUs keep llama.cpp's choice. Not
        // `supports_gpu_offload`: an `rpc` build answers true for it on a CPU-only machine.
        let has_gpu = crate::devices()
            .iter()
            .any(|d| matches!(d.kind(), crate::DeviceKind::Gpu | crate::DeviceKind::IntegratedGpu));
        let default_context = if has_gpu {
            ContextParams::default()
        } else {
            ContextParams::default().flash_attention(crate::FlashAttention::Disabled)
        };
        let ctx_params = params
            .context_params
            .clone()
            .unwrap_or(default_context)
            .n_ctx(params.n_ctx)
            .n_seq_max(params.slots)
            .kv_unified(true)
            .n_batch(n_batch)
            .n_ubatch(n_batch)
            .n_threads(threads);
        let ctx = model.context(ctx_params)?;
        let batch = Batch::new(n_batch, 1);
        let shared = Arc::new(Shared::default());
        {
            let mut m = shared.metrics.lock().unwrap_or_else(|e| e.into_inner());
            m.slots = params.slots;
            m.kv_cells = ctx.n_ctx();
        }
        let (tx, rx) = std_mpsc::channel();
        let handle = EngineHandle {
            tx,
            shared: shared.clone(),
            model: model.clone(),
            n_ctx: ctx.n_ctx(),
            slots: params.slots,
            max_queue: params.max_queue,
            stream_buffer: params.stream_buffer,
        };
        let slots = (0..params.slots).map(|i| Slot { seq: i, job: None, reserved: false, last_used: 0 }).collect();
        let mut worker = Worker {
            ctx,
            slots,
            queue: VecDeque::new(),
            rx,
            shared,
            batch,
            pacer: scheduler::Pacer::new(params.prefill_budget, params.prefill_slowdown),
            cursor: 0,
            step: 0,
            next_id: 0,
            stopping: false,
            draining: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("llama-engine".into())
            .spawn(move || worker.run())
            .map_err(|_| ContextError::InvalidParam("could not start the engine thread"))?;
        Ok(Engine { handle, thread: Some(thread) })
    }

    /// A handle to submit requests with (cheap to clone).
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// [`EngineHandle::submit`].
    pub fn submit(&self, request: Request) -> Result<Completion, SubmitError> {
        self.handle.submit(request)
    }

    /// [`EngineHandle::metrics`].
    pub fn metrics(&self) -> Metrics {
        self.handle.metrics()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.handle.tx.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl EngineHandle {
    /// Queues a request and returns its event stream. Tokenizing (or rendering chat messages)
    /// happens here, on the caller's thread. Fails at once, queueing nothing, when the queue is
    /// full or the prompt can never fit.
    pub fn submit(&self, request: Request) -> Result<Completion, SubmitError> {
        if self.shared.stopped.load(Ordering::Relaxed) {
            return Err(SubmitError::Stopped);
        }
        let n = request.n;
        if n > self.slots {
            return Err(SubmitError::TooManyCompletions { n, slots: self.slots });
        }
        let prompt = self.tokenize(&request)?;
        if prompt.len() >= self.n_ctx {
            return Err(SubmitError::PromptTooLong { prompt: prompt.len(), n_ctx: self.n_ctx });
        }
        let mut samplers = request.samplers;
        while samplers.len() < n {
            let clone = samplers[0].try_clone().map_err(|e| SubmitError::Invalid(e.to_string()))?;
            samplers.push(clone);
        }
        samplers.truncate(n);
        // Reserve a queue place first so concurrent submitters cannot overshoot the bound.
        let queued = self.shared.queued.fetch_add(1, Ordering::AcqRel);
        if queued >= self.max_queue {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            self.shared.metrics.lock().unwrap_or_else(|e| e.into_inner()).rejected_busy += 1;
            return Err(SubmitError::Busy(queued));
        }
        let (tx, rx) = mpsc::channel(self.stream_buffer);
        let cancel = Arc::new(AtomicBool::new(false));
        let submission = Submission {
            prompt: prompt.into(),
            samplers,
            params: request.params,
            deadline: request.deadline,
            tx,
            cancel: cancel.clone(),
            submitted: Instant::now(),
        };
        if self.tx.send(Command::Submit(submission)).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::Stopped);
        }
        Ok(Completion { rx, cancel })
    }

    fn tokenize(&self, request: &Request) -> Result<Vec<Token>, SubmitError> {
        let invalid = |e: &dyn std::fmt::Display| SubmitError::Invalid(e.to_string());
        let vocab = self.model.vocab();
        let tokens = match &request.prompt {
            Prompt::Text(text) => {
                let p = &request.params;
                vocab.tokenize_with(text, p.add_special, p.special_syntax).map_err(|e| invalid(&e))?
            }
            Prompt::Tokens(tokens) => {
                for &t in tokens {
                    vocab.check(t).map_err(|e| invalid(&e))?;
                }
                tokens.clone()
            }
            Prompt::Chat(messages) => self.render(messages).map_err(|e| invalid(&e))?,
        };
        if tokens.is_empty() {
            return Err(SubmitError::Invalid("the prompt is empty".into()));
        }
        Ok(tokens)
    }

    #[cfg(feature = "jinja")]
    fn render(&self, messages: &[crate::ChatMessage]) -> Result<Vec<Token>, crate::ChatError> {
        crate::ChatTemplate::from_model(&self.model)?.render_tokens(&self.model.vocab(), messages, true)
    }

    #[cfg(not(feature = "jinja"))]
    fn render(&self, messages: &[crate::ChatMessage]) -> Result<Vec<Token>, crate::ChatError> {
        let text = self.model.apply_chat_template(messages, true)?;
        self.model
            .vocab()
            .tokenize_with(&text, crate::AddSpecial::No, crate::SpecialSyntax::Tokens)
            .map_err(crate::ChatError::Tokenize)
    }

    /// A snapshot of the engine's counters and gauges.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.shared.metrics.lock().unwrap_or_else(|e| e.into_inner()).clone();
        m.queue_depth = self.shared.queued.load(Ordering::Relaxed);
        m
    }

    /// The model the engine serves.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Tokens one sequence can hold (the whole shared cache).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Sequences the engine decodes together.
    pub fn slots(&self) -> usize {
        self.slots
    }
}

/// The engine thread's state. Only this thread touches the context.
struct Worker {
    ctx: Context,
    slots: Vec<Slot>,
    /// Accepted, waiting for a slot (and for room in the KV pool).
    queue: VecDeque<Submission>,
    rx: std_mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    batch: Batch,
    pacer: scheduler::Pacer,
    /// Round-robin position of the prefill budget.
    cursor: usize,
    step: u64,
    next_id: u64,
    stopping: bool,
    /// Ended jobs whose last events wait for their consumer.
    draining: Vec<Job>,
}

impl Worker {
    fn run(&mut self) {
        while !self.stopping {
            // A panic here (a bug, never a caller's input) must not kill the server: fail the
            // requests in flight and start clean.
            if let Err(message) = crate::barrier::catch_panic(|| self.tick()) {
                self.fail_all(&format!("internal error in the engine: {message}"));
                self.ctx.clear_kv();
            }
        }
        self.shared.stopped.store(true, Ordering::Relaxed);
        for s in &mut self.queue {
            let _ = s.tx.try_send(Event::Done {
                index: 0,
                finish: FinishReason::Cancelled,
                usage: Usage::default(),
                timings: RequestTimings::default(),
            });
        }
        let ids: Vec<usize> = (0..self.slots.len()).filter(|&i| self.slots[i].job.is_some()).collect();
        for i in ids {
            self.end(i, Some(FinishReason::Cancelled), None);
        }
    }

    fn busy(&self) -> bool {
        self.slots.iter().any(|s| s.job.is_some()) || !self.draining.is_empty()
    }

    fn tick(&mut self) {
        self.receive();
        self.reap();
        self.admit();
        if !self.run_step() {
            // Nothing to decode: wait for a submission rather than spin (a paused consumer's
            // backlog is retried every few milliseconds).
            let wait = if self.busy() { Duration::from_millis(2) } else { Duration::from_millis(50) };
            match self.rx.recv_timeout(wait) {
                Ok(cmd) => self.command(cmd),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => self.stopping = self.queue.is_empty() && !self.busy(),
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
            Command::Submit(s) => self.queue.push_back(s),
            Command::Shutdown => self.stopping = true,
        }
    }

    /// Ends what nobody waits for any more, or what ran out of time; retries backlogs.
    fn reap(&mut self) {
        self.draining.retain_mut(|job| {
            job.flush();
            !job.backlog.is_empty() && !job.tx.is_closed()
        });
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let Some(job) = self.slots[i].job.as_mut() else { continue };
            job.flush();
            let reason = if job.abandoned() {
                Some(FinishReason::Cancelled)
            } else if job.deadline.is_some_and(|d| now >= d) {
                Some(FinishReason::Deadline)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.end(i, Some(reason), None);
            }
        }
        // Cancelled while queued: drop without taking a slot.
        let before = self.queue.len();
        self.queue.retain(|s| !(s.tx.is_closed() || s.cancel.load(Ordering::Relaxed)));
        let dropped = before - self.queue.len();
        if dropped > 0 {
            self.shared.queued.fetch_sub(dropped, Ordering::AcqRel);
            self.metrics(|m| m.finished.cancelled += dropped as u64);
        }
    }

    /// KV cells the running jobs may still grow to.
    fn reserved(&self) -> usize {
        self.slots.iter().filter_map(|s| s.job.as_ref()).map(|j| j.reserve).sum()
    }

    /// Starts queued requests while slots and KV room allow, in arrival order.
    fn admit(&mut self) {
        let n_ctx = self.ctx.n_ctx();
        while let Some(next) = self.queue.front() {
            let n = next.samplers.len();
            let free = self.slots.iter().filter(|s| s.idle()).count();
            if free < n {
                return;
            }
            let max_tokens = next.params.max_tokens.min(n_ctx);
            let reserve = next.prompt.len().saturating_add(max_tokens.saturating_mul(n)).min(n_ctx);
            // With nothing running, a request always starts: the cache is all its own.
            if self.busy() && self.reserved() + reserve > n_ctx {
                return;
            }
            let Some(s) = self.queue.pop_front() else { return };
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            self.start(s, reserve);
        }
    }

    fn start(&mut self, s: Submission, reserve: usize) {
        let Some((slot, mut common, donor)) = slots::choose(&self.slots, &self.ctx, &s.prompt) else { return };
        let seq = self.slots[slot].seq;
        if let Some(d) = donor {
            let src = self.slots[d].seq;
            let copied = self.ctx.kv_seq_rm(seq, ..).and_then(|()| self.ctx.kv_seq_cp(src, seq, 0..common));
            if copied.is_err() {
                common = 0;
            }
        }
        if self.ctx.kv_seq_rm(seq, common..).is_err() {
            common = 0;
            let _ = self.ctx.kv_seq_rm(seq, ..);
        }
        self.make_room(slot);
        let mut samplers = s.samplers.into_iter();
        let Some(mut sampler) = samplers.next() else { return };
        sampler.reset();
        let mut forks = Vec::new();
        for (index, mut sampler) in samplers.enumerate() {
            sampler.reset();
            if let Some(f) = (0..self.slots.len()).find(|&i| i != slot && self.slots[i].idle()) {
                self.slots[f].reserved = true;
                forks.push((f, index + 1, sampler));
            }
        }
        self.next_id += 1;
        let now = Instant::now();
        let mut job = Job {
            id: self.next_id,
            index: 0,
            prompt: s.prompt.clone(),
            n_past: common,
            sampler,
            driver: Driver::new(&s.params),
            params: s.params.clone(),
            pending: None,
            tx: s.tx,
            backlog: VecDeque::new(),
            cancel: s.cancel,
            deadline: s.deadline,
            submitted: s.submitted,
            admitted: now,
            first_token: None,
            last_token: None,
            cached: common,
            reserve,
            forks,
        };
        job.send(Event::Started { prompt_tokens: s.prompt.len(), cached_tokens: common });
        self.metrics(|m| {
            m.requests += 1;
            m.prompt_tokens += s.prompt.len() as u64;
            m.cached_tokens += common as u64;
        });
        self.slots[slot].job = Some(job);
        self.slots[slot].last_used = self.step;
    }

    /// Frees idle slots' cached prefixes, least recently used first, until the running jobs'
    /// reservations and the cache contents fit the pool.
    fn make_room(&mut self, keep: usize) {
        let n_ctx = self.ctx.n_ctx();
        let cached = |w: &Worker, i: usize| w.ctx.cached_tokens(w.slots[i].seq).map_or(0, <[Token]>::len);
        let mut idle: Vec<usize> = (0..self.slots.len()).filter(|&i| i != keep && self.slots[i].idle()).collect();
        idle.sort_by_key(|&i| self.slots[i].last_used);
        for i in idle {
            let held: usize = (0..self.slots.len()).filter(|&j| self.slots[j].idle()).map(|j| cached(self, j)).sum();
            if self.reserved() + held <= n_ctx {
                break;
            }
            let seq = self.slots[i].seq;
            let _ = self.ctx.kv_seq_rm(seq, ..);
        }
    }

    /// One decode: returns false when there was nothing to do.
    fn run_step(&mut self) -> bool {
        let (outputs, added) = match scheduler::plan(&self.slots, &mut self.batch, &self.pacer, &mut self.cursor) {
            Ok(plan) => plan,
            Err(e) => {
                self.fail_all(&format!("could not build a batch: {e}"));
                return false;
            }
        };
        if self.batch.is_empty() {
            return false;
        }
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
                // The pool is full after all: end the newest sequence, never all of them.
                let newest = (0..self.slots.len())
                    .filter(|&i| added[i] > 0)
                    .max_by_key(|&i| self.slots[i].job.as_ref().map_or(0, |j| j.id));
                if let Some(i) = newest {
                    self.end(i, Some(FinishReason::ContextFull), None);
                }
                return true;
            }
            Err(e) => {
                let msg = format!("decode failed: {e}");
                for i in (0..self.slots.len()).filter(|&i| added[i] > 0) {
                    self.end(i, None, Some(msg.clone()));
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
            if let Some(job) = self.slots[i].job.as_mut() {
                job.n_past += n;
                if n > 0 && !job.prefilling() {
                    job.pending = None;
                }
            }
            if n > 0 {
                self.slots[i].last_used = self.step;
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

    /// Once `slot`'s prompt is decoded, starts its request's other completions on copies of
    /// it; returns their slots.
    fn fork(&mut self, slot: usize) -> Vec<usize> {
        let src = self.slots[slot].seq;
        let Some(job) = self.slots[slot].job.as_mut() else { return Vec::new() };
        let forks = std::mem::take(&mut job.forks);
        if forks.is_empty() {
            return Vec::new();
        }
        let (id, prompt, params) = (job.id, job.prompt.clone(), job.params.clone());
        let (tx, cancel, deadline, submitted, admitted) =
            (job.tx.clone(), job.cancel.clone(), job.deadline, job.submitted, job.admitted);
        let mut started = Vec::new();
        for (f, index, sampler) in forks {
            let seq = self.slots[f].seq;
            self.slots[f].reserved = false;
            let copied = self.ctx.kv_seq_rm(seq, ..).and_then(|()| self.ctx.kv_seq_cp(src, seq, ..));
            if let Err(e) = copied {
                let _ = tx.try_send(Event::Error { index, message: format!("could not share the prompt: {e}") });
                continue;
            }
            self.slots[f].job = Some(Job {
                id,
                index,
                prompt: prompt.clone(),
                n_past: prompt.len(),
                sampler,
                driver: Driver::new(&params),
                params: params.clone(),
                pending: None,
                tx: tx.clone(),
                backlog: VecDeque::new(),
                cancel: cancel.clone(),
                deadline,
                submitted,
                admitted,
                first_token: None,
                last_token: None,
                cached: 0,
                reserve: 0,
                forks: Vec::new(),
            });
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
            let reason = job.driver.finish_reason();
            self.end(slot, reason, None);
            return;
        }
        if job.n_past >= n_ctx {
            self.end(slot, Some(FinishReason::ContextFull), None);
            return;
        }
        let token = match job.sampler.sample(&self.ctx, Output::At(idx)) {
            Ok(t) => t,
            Err(e) => {
                self.end(slot, None, Some(format!("sampling failed: {e}")));
                return;
            }
        };
        let logits = if job.driver.wants_logprobs() { self.ctx.logits(Output::At(idx)) } else { None };
        let piece = match job.driver.push(&self.ctx.vocab(), token, logits) {
            Ok(p) => p,
            Err(e) => {
                self.end(slot, None, Some(e.to_string()));
                return;
            }
        };
        let now = Instant::now();
        let (submitted, last) = (job.submitted, job.last_token.replace(now));
        if job.first_token.is_none() {
            job.first_token = Some(now);
        }
        match piece {
            Some(piece) => {
                job.pending = Some(token);
                let index = job.index;
                job.send(Event::Piece { index, piece });
                self.metrics(|m| {
                    m.generated_tokens += 1;
                    match last {
                        Some(t) => m.inter_token_latency.observe(now - t),
                        None => m.time_to_first_token.observe(now - submitted),
                    }
                });
                let Some(job) = self.slots[slot].job.as_ref() else { return };
                if job.driver.finish_reason().is_some() {
                    let reason = job.driver.finish_reason();
                    self.end(slot, reason, None);
                }
            }
            None => {
                let reason = job.driver.finish_reason();
                self.end(slot, reason, None);
            }
        }
    }

    /// Ends the job in `slot`: the held-back text and `Done` (or `Error`), then the slot is
    /// free. Its cache stays for prefix reuse, up to what was decoded.
    fn end(&mut self, slot: usize, reason: Option<FinishReason>, error: Option<String>) {
        let Some(mut job) = self.slots[slot].job.take() else { return };
        for (f, _, _) in job.forks.drain(..) {
            self.slots[f].reserved = false;
        }
        let seq = self.slots[slot].seq;
        let keep = if reason == Some(FinishReason::ContextFull) || error.is_some() { 0 } else { job.n_past };
        let _ = self.ctx.kv_seq_rm(seq, keep..);
        let index = job.index;
        let failed = error.is_some();
        match error {
            Some(message) => job.send(Event::Error { index, message }),
            None => {
                if let Some(piece) = job.driver.flush() {
                    job.send(Event::Piece { index, piece });
                }
                let usage = Usage {
                    prompt_tokens: job.prompt.len(),
                    cached_tokens: job.cached,
                    completion_tokens: job.driver.generated(),
                };
                let timings = RequestTimings {
                    queued: job.admitted - job.submitted,
                    time_to_first_token: job.first_token.map_or(Duration::ZERO, |t| t - job.submitted),
                    total: job.submitted.elapsed(),
                };
                let finish = reason.unwrap_or(FinishReason::Cancelled);
                job.send(Event::Done { index, finish, usage, timings });
            }
        }
        self.metrics(|m| m.finished.count(if failed { None } else { reason }));
        // A consumer that is behind still gets its last events, as it reads.
        if !job.backlog.is_empty() && !job.tx.is_closed() {
            self.draining.push(job);
        }
    }

    fn fail_all(&mut self, message: &str) {
        for i in 0..self.slots.len() {
            self.end(i, None, Some(message.to_string()));
            self.slots[i].reserved = false;
        }
    }

    fn metrics(&self, f: impl FnOnce(&mut Metrics)) {
        f(&mut self.shared.metrics.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Gauges, refreshed once per tick.
    fn publish(&self) {
        let busy = self.slots.iter().filter(|s| s.job.is_some()).count();
        let cells = self.slots.iter().map(|s| self.ctx.cached_tokens(s.seq).map_or(0, <[Token]>::len)).sum();
        self.metrics(|m| {
            m.slots_busy = busy;
            m.max_slots_busy = m.max_slots_busy.max(busy);
            m.kv_cells_used = cells;
        });
    }
}
