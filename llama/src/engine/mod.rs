//! Serving many requests over one model: continuous batching inside the library.
//!
//! An [`Engine`] owns one [`Context`](crate::Context) with `slots` sequences (a unified KV cache) on its own
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
//! - **KV on demand, replies never cut**: a request starts when its prompt fits beside what the
//!   running ones hold; nothing is reserved for replies. When the pool fills, idle slots'
//!   prefixes give way first, then the newest request is preempted (its cache saved to RAM or
//!   recomputed later) and resumes when room returns: its consumer sees a pause. A reply ends
//!   early only when one sequence alone outgrows the context ([`FinishReason::ContextFull`](crate::FinishReason::ContextFull)).
//!   The queue is bounded: a full one answers [`SubmitError::Busy`] at once.
//! - **Prefix cache**: a request takes the idle slot whose cache it mostly shares, else an
//!   empty slot, else the least recently used; its prefix comes from that slot, a busy one, or
//!   the host-RAM tier ([`EngineParams::cache_ram`]), where a slot's cache goes before it is
//!   overwritten or evicted. Conversations that take turns thus find their history cached even
//!   when there are more of them than slots. It reports the cached tokens.
//! - **Stalled consumers**: with [`EngineParams::stall_timeout`], a request whose consumer reads
//!   nothing for that long is cancelled and its slot serves the next.
//! - **Isolation**: a request's own failure (a grammar dead end, a panicking Rust sampler)
//!   ends that request only.

mod admission;
mod embeddings;
mod kv;
mod media;
mod metrics;
mod request;
mod scheduler;
mod slots;
mod worker;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use embeddings::{Embeddings, PendingEmbeddings};
pub use metrics::{Finished, Histogram, Metrics, RamTier, LATENCY_BUCKETS};
pub use request::{Completion, Event, Events, FailureKind, Prompt, Request, RequestTimings, SubmitError, Usage};

use crate::error::ContextError;
use crate::{Batch, ContextParams, Model, Token};
use slots::{Job, JobSpec, Slot};
use worker::Worker;

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
    /// a decode-only step (default 3; at least 1, and 3 if not finite): the prompt chunk is sized
    /// from measured costs to fit. Lower keeps running streams smoother while a long prompt is
    /// read; higher gives that prompt its first token sooner. Why 3: a 1,500-token prompt beside
    /// three 1,024-token streams (`vs.py` k3-long1500, SmolLM2 Q4_0 / Q4_1, one round) reached
    /// its first token after 14 / 20 s at 3 against 25 / 45 s at 2, the streams' p99 gap during
    /// it was 5.7 / 4.4× their p50 before it against 4.9 / 5.0×, and the run's aggregate was
    /// 1.03 / 1.04× llama-server's against 0.85 / 0.87×: a shorter prefill also leaves the
    /// streams less time to grow slower.
    pub prefill_slowdown: f64,
    /// Requests that may wait for a slot (default 64); beyond, [`SubmitError::Busy`].
    pub max_queue: usize,
    /// Events buffered per request before its sequence pauses for the consumer (default 64; at
    /// least 1).
    pub stream_buffer: usize,
    /// Host RAM, in bytes, for the prefix cache's second tier (default 2 GiB; 0: none). A slot's
    /// cache is saved there before it is overwritten or evicted, and restored when a later prompt
    /// starts with it. llama-server keeps 8 GiB by default; ours is a quarter of that because it
    /// is memory a user did not ask for, and it already holds ~90 conversations of 1,000 tokens
    /// of a 135M-parameter model, or 4 of 4,000 tokens of an 8B one (128 KiB of f16 KV per token).
    pub cache_ram: usize,
    /// A request whose consumer has read nothing for this long (its stream buffer full) is
    /// cancelled and its slot freed (default `None`: it waits as long as it takes).
    pub stall_timeout: Option<Duration>,
    /// The context parameters to start from (flash attention, KV cache types, ...; default: the
    /// engine's choice); the engine still sets the size, sequences, batch and a unified cache.
    pub context_params: Option<ContextParams>,
    /// The projector that reads the images and audio of requests ([`Request::media`]); it must
    /// be loaded for the engine's model (default none: requests with media are refused).
    #[cfg(feature = "mtmd")]
    pub projector: Option<Arc<crate::media::Projector>>,
}

impl Default for EngineParams {
    fn default() -> Self {
        EngineParams {
            slots: 4,
            n_ctx: 4096,
            threads: None,
            prefill_budget: 256,
            prefill_slowdown: 3.0,
            max_queue: 64,
            stream_buffer: 64,
            cache_ram: 2 << 30,
            stall_timeout: None,
            context_params: None,
            #[cfg(feature = "mtmd")]
            projector: None,
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

    /// Sets [`cache_ram`](Self::cache_ram), in bytes.
    pub fn cache_ram(mut self, bytes: usize) -> Self {
        self.cache_ram = bytes;
        self
    }

    /// Sets [`stall_timeout`](Self::stall_timeout).
    pub fn stall_timeout(mut self, after: Duration) -> Self {
        self.stall_timeout = Some(after);
        self
    }

    /// Sets [`context_params`](Self::context_params).
    pub fn context_params(mut self, params: ContextParams) -> Self {
        self.context_params = Some(params);
        self
    }

    /// Sets [`projector`](Self::projector).
    #[cfg(feature = "mtmd")]
    pub fn projector(mut self, projector: crate::media::Projector) -> Self {
        self.projector = Some(Arc::new(projector));
        self
    }

    /// Every option brought into its documented range.
    fn in_range(mut self) -> Self {
        self.slots = self.slots.clamp(1, 256);
        self.n_ctx = self.n_ctx.max(16);
        self.threads = self.threads.map(|n| n.max(1));
        self.prefill_budget = self.prefill_budget.max(1);
        self.prefill_slowdown = if self.prefill_slowdown.is_finite() { self.prefill_slowdown.max(1.0) } else { 3.0 };
        self.stream_buffer = self.stream_buffer.max(1);
        self
    }
}

/// A running engine. Dropping it stops the engine thread: requests still running end with
/// [`FinishReason::Shutdown`](crate::FinishReason::Shutdown).
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
    #[cfg(feature = "mtmd")]
    projector: Option<Arc<crate::media::Projector>>,
}

#[derive(Debug, Default)]
struct Shared {
    metrics: Mutex<Metrics>,
    queued: AtomicUsize,
    stopped: AtomicBool,
}

enum Command {
    Submit(Box<Job>),
    Shutdown,
}

impl Engine {
    /// Creates the context and starts the engine thread.
    pub fn new(model: &Model, params: EngineParams) -> Result<Engine, ContextError> {
        let params = params.in_range();
        #[cfg(feature = "mtmd")]
        if let Some(projector) = &params.projector {
            if !Arc::ptr_eq(&projector.model().handle, &model.handle) {
                return Err(ContextError::InvalidParam("the projector was loaded for another model"));
            }
            // The engine counts a medium's positions and cells as one: M-RoPE models put more
            // embeddings than positions.
            if projector.uses_mrope() {
                return Err(ContextError::InvalidParam("the engine does not serve M-RoPE projectors yet"));
            }
        }
        let threads = params.threads.unwrap_or_else(crate::context::default_threads);
        let n_batch = (params.prefill_budget + params.slots).max(params.slots * 2);
        // llama.cpp's own choice of flash attention (auto: on where the backend has it). On this
        // CPU it is what makes a unified pool cheap: its kernel skips the cells a sequence's mask
        // hides, so a step's attention costs what the sequence holds, not what the whole pool
        // holds. benches/engine.rs, 2 threads, SmolLM2 Q4_1, same run: one stream 90 vs 76 t/s
        // (0.93× vs 0.69× Context::generate), 8 streams 125 vs 105 t/s; with a 1,500-token prompt
        // read beside 3 streams their p99 inter-token gap was 1.97× vs 2.32× its p50 without it.
        // (An older build measured the opposite, a mixed step ~20× slower with it.) Its cost
        // here: that prompt's first token came ~18% later (median of 6 alternated runs), the
        // pacer sizing prompt chunks from the now cheaper decode-only steps.
        let default_context = ContextParams::default();
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
            #[cfg(feature = "mtmd")]
            projector: params.projector.clone(),
        };
        let slots = (0..params.slots).map(|i| Slot { seq: i, job: None, held_for_fork: false, last_used: 0 }).collect();
        let mut worker = Worker {
            ctx,
            pool: kv::Pool::new(params.slots, params.cache_ram),
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
            stall_timeout: params.stall_timeout,
            draining: Vec::new(),
            #[cfg(feature = "mtmd")]
            projector: params.projector,
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
        let (prompt, media) = self.prepare(&request)?;
        if prompt.len() >= self.n_ctx {
            return Err(SubmitError::PromptTooLong { prompt: prompt.len(), n_ctx: self.n_ctx });
        }
        let mut samplers = request.samplers;
        while samplers.len() < n {
            let clone = samplers[0].try_clone().map_err(|e| SubmitError::Invalid(e.to_string()))?;
            samplers.push(clone);
        }
        samplers.truncate(n);
        let mut samplers = samplers.into_iter();
        let first = samplers.next().ok_or_else(|| SubmitError::Invalid("no sampler".into()))?;
        // Reserve a queue place first so concurrent submitters cannot overshoot the bound.
        let queued = self.shared.queued.fetch_add(1, Ordering::AcqRel);
        if queued >= self.max_queue {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            self.shared.metrics.lock().unwrap_or_else(|e| e.into_inner()).rejected_busy += 1;
            return Err(SubmitError::Busy(queued));
        }
        let (tx, rx) = mpsc::channel(self.stream_buffer);
        let cancel = Arc::new(AtomicBool::new(false));
        let spec = JobSpec {
            prompt: prompt.into(),
            media,
            params: request.params,
            tx,
            cancel: cancel.clone(),
            deadline: request.deadline,
            submitted: Instant::now(),
        };
        let mut job = Job::new(spec, 0, 0, first);
        job.forks = samplers.enumerate().map(|(i, s)| (i + 1, s)).collect();
        if self.tx.send(Command::Submit(Box::new(job))).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::Stopped);
        }
        Ok(Completion { rx, cancel })
    }

    /// The tokens `request`'s prompt becomes, as [`submit`](Self::submit) computes them (a
    /// chat rendered with the model's template): to count them without generating. Each medium
    /// of [`Request::media`] stands as placeholders (negative ids) for the positions it takes.
    pub fn tokenize(&self, request: &Request) -> Result<Vec<Token>, SubmitError> {
        self.prepare(request).map(|(tokens, _)| tokens)
    }

    /// The prompt's tokens, and where its media stand.
    fn prepare(&self, request: &Request) -> Result<(Vec<Token>, Option<Arc<media::PromptMedia>>), SubmitError> {
        let invalid = |e: &dyn std::fmt::Display| SubmitError::Invalid(e.to_string());
        #[cfg(feature = "mtmd")]
        if !request.media.is_empty() {
            return self.prepare_media(request);
        }
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
        Ok((tokens, None))
    }

    /// A prompt with images or audio: its text and media through the projector (a chat's
    /// contents keep their special-token syntax plain), each medium standing as placeholders.
    #[cfg(feature = "mtmd")]
    fn prepare_media(&self, request: &Request) -> Result<(Vec<Token>, Option<Arc<media::PromptMedia>>), SubmitError> {
        use crate::media::{media_entries, ChunkKind, Part};
        let invalid = |e: &dyn std::fmt::Display| SubmitError::Invalid(e.to_string());
        let projector = self
            .projector
            .as_ref()
            .ok_or_else(|| SubmitError::Invalid("this engine takes no images or audio: it has no projector".into()))?;
        let marker = projector.marker();
        let pieces: Vec<(String, crate::SpecialSyntax)> = match &request.prompt {
            Prompt::Text(text) => vec![(text.clone(), request.params.special_syntax)],
            Prompt::Chat(messages) => self.render_pieces(messages).map_err(|e| invalid(&e))?,
            Prompt::Tokens(_) => {
                return Err(SubmitError::Invalid("images and audio need a text or chat prompt".into()))
            }
        };
        let markers: usize = pieces.iter().map(|(text, _)| text.matches(marker).count()).sum();
        if markers != request.media.len() {
            return Err(invalid(&crate::media::MediaError::MarkerCount { markers, media: request.media.len() }));
        }
        let mut next = request.media.iter();
        let mut parts = Vec::new();
        for (text, syntax) in &pieces {
            for (i, piece) in text.split(marker).enumerate() {
                if i > 0 {
                    parts.push(Part::Media(next.next().ok_or_else(|| SubmitError::Invalid("media count".into()))?));
                }
                if !piece.is_empty() {
                    parts.push(Part::Text(piece, *syntax));
                }
            }
        }
        // A chat gets BOS as its text-only form does (`tokenize_pieces`), and never an EOS.
        let chat = matches!(request.prompt, Prompt::Chat(_));
        let bos = if chat { self.chat_bos(&pieces) } else { None };
        if let Some(bos) = &bos {
            parts.insert(0, Part::Text(bos, crate::SpecialSyntax::Tokens));
        }
        let add_special = if chat { crate::AddSpecial::No } else { request.params.add_special };
        let chunks = projector.tokenize_parts(&parts, add_special).map_err(|e| invalid(&e))?;
        let mut tokens = Vec::new();
        let mut spans = Vec::new();
        for (index, chunk) in chunks.iter().enumerate() {
            if let Some(text) = chunk.tokens() {
                tokens.extend_from_slice(text);
                continue;
            }
            // A medium without positions would never move its sequence on.
            let entries =
                media_entries(chunk.media_id(), chunk.n_pos()).filter(|e| !e.is_empty()).ok_or_else(|| {
                    SubmitError::Invalid(format!("a {:?} chunk without an id or positions", chunk.kind()))
                })?;
            spans.push(media::Span { start: tokens.len(), len: entries.len(), chunk: index });
            tokens.extend(entries);
        }
        if chunks.iter().last().is_some_and(|c| c.kind() != ChunkKind::Text) {
            // Generation starts from the logits of the prompt's last token: media have none.
            return Err(SubmitError::Invalid("the prompt must not end with an image or audio clip".into()));
        }
        Ok((tokens, Some(Arc::new(media::PromptMedia { spans, chunks }))))
    }

    /// The text of a chat's BOS when it must be added: the model wants one and its template did
    /// not write it.
    #[cfg(feature = "mtmd")]
    fn chat_bos(&self, pieces: &[(String, crate::SpecialSyntax)]) -> Option<String> {
        let vocab = self.model.vocab();
        let bos = vocab.bos().filter(|_| vocab.adds_bos())?;
        let first =
            pieces.first().and_then(|(text, syntax)| vocab.tokenize_with(text, crate::AddSpecial::No, *syntax).ok());
        if first.and_then(|t| t.first().copied()) == Some(bos) {
            return None;
        }
        String::from_utf8(vocab.token_to_bytes(bos, crate::ControlText::Show).ok()?).ok()
    }

    #[cfg(all(feature = "mtmd", feature = "jinja"))]
    fn render_pieces(
        &self,
        messages: &[crate::ChatMessage],
    ) -> Result<Vec<(String, crate::SpecialSyntax)>, crate::ChatError> {
        crate::ChatTemplate::from_model(&self.model)?.render_pieces(messages, true)
    }

    #[cfg(all(feature = "mtmd", not(feature = "jinja")))]
    fn render_pieces(
        &self,
        messages: &[crate::ChatMessage],
    ) -> Result<Vec<(String, crate::SpecialSyntax)>, crate::ChatError> {
        Ok(vec![(self.model.apply_chat_template(messages, true)?, crate::SpecialSyntax::Tokens)])
    }

    /// The text that stands for one medium of [`Request::media`] in a prompt; `None` without a
    /// projector.
    #[cfg(feature = "mtmd")]
    pub fn media_marker(&self) -> Option<&str> {
        self.projector.as_deref().map(|p| p.marker())
    }

    /// The engine's projector, if it has one.
    #[cfg(feature = "mtmd")]
    pub fn projector(&self) -> Option<&crate::media::Projector> {
        self.projector.as_deref()
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
