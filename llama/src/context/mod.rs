//! Inference state: [`Context`] (KV cache, compute buffers, outputs) and [`ContextParams`].

mod ledger;
mod memory;
mod params;
mod state;

pub(crate) use params::default_threads;
pub use params::{AttentionType, ContextParams, FlashAttention, KvCacheType, PoolingType, RopeScaling, UnknownName};

use std::ffi::c_void;
use std::ptr::NonNull;

use crate::error::{ContextError, DecodeError};
use crate::{Batch, Logits, Model, Token, Vocab};
pub(crate) use ledger::Ledger;

/// Which output of the last decode to read: outputs exist for the batch entries that asked for
/// them ([`Batch::add`]'s flag; [`Context::decode_tokens`] asks for the last token only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Output {
    /// The last batch entry that asked for output: the next token after a prompt.
    Last,
    /// Batch entry `i` (counted from 0 in the order entries were added).
    At(usize),
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Last => f.write_str("the last output"),
            Output::At(i) => write!(f, "batch entry {i}"),
        }
    }
}

/// Heap state of the abort callback: its address is what C holds, so it must not move with
/// the context.
struct AbortState {
    f: Box<dyn FnMut() -> bool + Send>,
    panicked: Option<String>,
}

/// Timings llama.cpp keeps for a context (see [`Context::perf`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextPerf {
    /// Milliseconds spent loading (first decode's setup).
    pub load_ms: f64,
    /// Milliseconds spent on prompt (batch) evaluation.
    pub prompt_ms: f64,
    /// Number of prompt tokens evaluated.
    pub prompt_tokens: i32,
    /// Milliseconds spent on single-token evaluation.
    pub eval_ms: f64,
    /// Number of single-token evaluations.
    pub eval_tokens: i32,
    /// Tokens reused from the cache.
    pub reused: i32,
}

/// An inference context on a [`Model`]: KV cache, compute buffers and the outputs of the last
/// decode.
///
/// Holds a handle to its model, so it can be stored or moved freely. `Send` but not `Sync`:
/// llama.cpp contexts are not safe to use from two threads at once.
///
/// ```no_run
/// use llama::{AddSpecial, Batch, ContextParams, Logits, Model, Output, Sampler};
/// let model = Model::load("model.gguf")?;
/// let mut ctx = model.context(ContextParams::default())?;
/// let tokens = model.vocab().tokenize("Once upon a time", AddSpecial::Yes)?;
/// let mut batch = Batch::new(tokens.len(), 1);
/// batch.add_sequence(&tokens, 0, 0, Logits::Want)?;
/// ctx.decode(&batch)?;
/// let next = Sampler::greedy().sample(&ctx, Output::Last)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Context {
    ptr: NonNull<llama_sys::llama_context>,
    /// Batch indices whose outputs the last successful decode produced.
    outputs: Vec<bool>,
    n_vocab: usize,
    kv_unified: bool,
    embeddings: bool,
    abort: Option<Box<AbortState>>,
    /// Which tokens each sequence holds in the KV cache (for prefix reuse).
    pub(crate) ledger: Ledger,
    /// LoRA adapters currently applied, kept alive while C uses them.
    pub(crate) loras: Vec<crate::LoraAdapter>,
    // Declared last: dropped after the context is freed.
    model: Model,
}

// SAFETY: a llama_context has no thread affinity (no thread-locals, no thread-bound handles);
// it may be used from any thread as long as only one uses it at a time, which `&mut self` on
// every mutating method and the absence of `Sync` guarantee. The abort callback is `Send`.
unsafe impl Send for Context {}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("n_ctx", &self.n_ctx()).field("model", &self.model).finish()
    }
}

impl Context {
    pub(crate) fn new(model: &Model, params: ContextParams) -> Result<Context, ContextError> {
        let raw = params.raw()?;
        // SAFETY: the model is alive (and kept alive by the clone stored below); `raw` comes
        // from llama.cpp's defaults with plain values set, no callbacks.
        let ctx = unsafe { llama_sys::llama_rs_init_from_model(model.as_ptr(), raw) };
        let ptr = NonNull::new(ctx).ok_or(ContextError::Failed { n_ctx: params.n_ctx })?;
        Ok(Context {
            ptr,
            outputs: Vec::new(),
            n_vocab: model.vocab().n_tokens(),
            kv_unified: params.kv_unified,
            embeddings: params.embeddings,
            abort: None,
            loras: Vec::new(),
            ledger: Ledger::new(params.n_seq_max),
            model: model.clone(),
        })
    }

    /// The model this context runs.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model's vocabulary.
    pub fn vocab(&self) -> Vocab<'_> {
        self.model.vocab()
    }

    pub(crate) fn as_ptr(&self) -> *mut llama_sys::llama_context {
        self.ptr.as_ptr()
    }

    /// Context length in tokens.
    pub fn n_ctx(&self) -> usize {
        // SAFETY: the context is alive.
        (unsafe { llama_sys::llama_n_ctx(self.as_ptr()) }) as usize
    }

    /// Largest batch [`decode`](Self::decode) accepts.
    pub fn n_batch(&self) -> usize {
        // SAFETY: the context is alive.
        (unsafe { llama_sys::llama_n_batch(self.as_ptr()) }) as usize
    }

    /// Physical micro-batch size.
    pub fn n_ubatch(&self) -> usize {
        // SAFETY: the context is alive.
        (unsafe { llama_sys::llama_n_ubatch(self.as_ptr()) }) as usize
    }

    /// Number of sequences the context can hold.
    pub fn n_seq_max(&self) -> usize {
        // SAFETY: the context is alive.
        (unsafe { llama_sys::llama_n_seq_max(self.as_ptr()) }) as usize
    }

    /// Vocabulary size: valid token ids are `0..n_vocab`.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Whether `token` ends generation.
    pub fn is_eog(&self, token: Token) -> bool {
        self.vocab().is_eog(token)
    }

    fn validate(&self, batch: &Batch) -> Result<(), DecodeError> {
        if batch.is_empty() {
            return Err(DecodeError::Empty);
        }
        let n_batch = self.n_batch();
        if batch.len() > n_batch {
            return Err(DecodeError::TooLarge { len: batch.len(), n_batch });
        }
        if batch.has_tokens() {
            if let Some(&bad) = batch.tokens().iter().find(|t| usize::try_from(t.0).map_or(true, |t| t >= self.n_vocab))
            {
                return Err(DecodeError::InvalidToken { token: bad.0, n_vocab: self.n_vocab() });
            }
        } else if batch.embd_width() != self.model.n_embd() {
            return Err(DecodeError::EmbeddingWidth { got: batch.embd_width(), expected: self.model.n_embd() });
        }
        let n_seq_max = self.n_seq_max();
        for i in 0..batch.len() {
            if let Some(&seq) = batch.seq_ids(i).iter().find(|&&s| s as usize >= n_seq_max) {
                return Err(DecodeError::InvalidSeqId { seq: seq as usize, n_seq_max });
            }
        }
        Ok(())
    }

    /// Runs the model on `batch`, appending it to the KV cache.
    ///
    /// The batch is validated first (size, token ids, sequence ids), so llama.cpp never sees
    /// input that would make it abort. Each error says whether the cache was left unchanged.
    pub fn decode(&mut self, batch: &Batch) -> Result<(), DecodeError> {
        self.validate(batch)?;
        self.outputs.clear();
        self.clear_abort_panic();
        // SAFETY: the context is alive and exclusively borrowed; the batch's arrays are valid
        // for `len` entries and were validated above.
        let rc = unsafe { llama_sys::llama_rs_decode(self.as_ptr(), batch.raw()) };
        let result = self.finish(rc, batch);
        match &result {
            Ok(()) => self.ledger.record(batch),
            Err(DecodeError::NoKvSlot | DecodeError::InvalidBatch) => {}
            Err(_) => self.ledger.forget_batch(batch),
        }
        result
    }

    /// Decodes `tokens` as sequence `seq` from position `start`, in chunks of `n_batch`, asking
    /// for logits of the last token only: the usual way to read a prompt.
    ///
    /// ```no_run
    /// # let model = llama::Model::load("m.gguf")?;
    /// # let mut ctx = model.context(Default::default())?;
    /// let prompt = model.vocab().tokenize("Hello", llama::AddSpecial::Yes)?;
    /// ctx.decode_tokens(&prompt, 0, 0)?;
    /// let logits = ctx.logits(llama::Output::Last);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decode_tokens(&mut self, tokens: &[Token], start: usize, seq: usize) -> Result<(), DecodeError> {
        let n_batch = self.n_batch().max(1);
        let mut batch = Batch::try_new(tokens.len().min(n_batch), 1)?;
        for (i, chunk) in tokens.chunks(n_batch).enumerate() {
            batch.clear();
            let pos = start.saturating_add(i * n_batch);
            let last = if (i + 1) * n_batch >= tokens.len() { Logits::Want } else { Logits::Skip };
            batch.add_sequence(chunk, pos, seq, last)?;
            self.decode(&batch)?;
        }
        Ok(())
    }

    /// After a decode made outside [`decode`](Self::decode) (media embeddings, by
    /// `media::Projector`): no logits remain readable, and sequence `seq` holds `entries` from
    /// `pos` on, or is unknown to the ledger when `None` (the decode failed part way).
    #[cfg(feature = "mtmd")]
    pub(crate) fn media_decoded(&mut self, seq: i32, pos: i32, entries: Option<&[Token]>) {
        self.outputs.clear();
        match entries {
            Some(entries) => self.ledger.appended(seq, pos, entries),
            None => self.ledger.forget(seq),
        }
    }

    /// The tokens sequence `seq` holds at positions `0..n` of the KV cache, as far as this
    /// context can tell; `None` once an operation made that unknowable (a hole, a shift, a
    /// restored state, adapters changed since).
    pub fn cached_tokens(&self, seq: usize) -> Option<&[Token]> {
        self.ledger.known(i32::try_from(seq).ok()?)
    }

    /// Runs the encoder of an encoder(-decoder) model on `batch` (no KV cache involved).
    pub fn encode(&mut self, batch: &Batch) -> Result<(), DecodeError> {
        if !self.model.has_encoder() {
            return Err(DecodeError::NoEncoder);
        }
        self.validate(batch)?;
        self.outputs.clear();
        self.clear_abort_panic();
        // SAFETY: as in `decode`; the model has an encoder.
        let rc = unsafe { llama_sys::llama_rs_encode(self.as_ptr(), batch.raw()) };
        self.finish(rc, batch)
    }

    fn finish(&mut self, rc: i32, batch: &Batch) -> Result<(), DecodeError> {
        match rc {
            0 => {
                self.outputs = batch.output_flags().iter().map(|&f| f != 0).collect();
                Ok(())
            }
            1 => Err(DecodeError::NoKvSlot),
            2 => match self.abort.as_mut().and_then(|a| a.panicked.take()) {
                Some(message) => Err(DecodeError::AbortCallbackPanicked(message)),
                None => Err(DecodeError::Aborted),
            },
            -1 => Err(DecodeError::InvalidBatch),
            i32::MIN => match crate::barrier::take_exception() {
                Some(what) => Err(DecodeError::Exception(what)),
                None => Err(DecodeError::Fatal(rc)),
            },
            rc => Err(DecodeError::Fatal(rc)),
        }
    }

    /// The batch entry `at` names, if the last decode produced output for it.
    fn resolve(&self, at: Output) -> Option<i32> {
        let idx = match at {
            Output::Last => self.outputs.iter().rposition(|&wanted| wanted)?,
            Output::At(i) => i,
        };
        (*self.outputs.get(idx)?).then_some(i32::try_from(idx).ok()?)
    }

    /// Logits (one per vocabulary entry) of one output of the last decode; `None` if that batch
    /// entry did not ask for output.
    ///
    /// ```no_run
    /// use llama::{AddSpecial, Output};
    /// # let model = llama::Model::load("m.gguf")?;
    /// # let mut ctx = model.context(Default::default())?;
    /// ctx.decode_tokens(&model.vocab().tokenize("Hello", AddSpecial::Yes)?, 0, 0)?;
    /// let next = ctx.logits(Output::Last).expect("the last prompt token asks for logits");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn logits(&self, at: Output) -> Option<&[f32]> {
        let idx = self.resolve(at)?;
        // SAFETY: the index is one the last decode produced output for (llama.cpp checks it
        // again and returns null); rows stay valid until the next decode, which needs `&mut self`.
        let p = unsafe { llama_sys::llama_get_logits_ith(self.as_ptr(), idx) };
        // SAFETY: a non-null row holds n_vocab floats.
        NonNull::new(p).map(|p| unsafe { std::slice::from_raw_parts(p.as_ptr(), self.n_vocab) })
    }

    /// Embedding of one output of the last decode (context created with
    /// [`embeddings(true)`](ContextParams::embeddings)).
    pub fn embeddings(&self, at: Output) -> Option<&[f32]> {
        if !self.embeddings {
            return None;
        }
        let idx = self.resolve(at)?;
        // SAFETY: as in `logits`; llama.cpp returns null for entries without embeddings.
        let p = unsafe { llama_sys::llama_get_embeddings_ith(self.as_ptr(), idx) };
        // SAFETY: a non-null row holds n_embd_out floats.
        NonNull::new(p).map(|p| unsafe { std::slice::from_raw_parts(p.as_ptr(), self.model.n_embd_out()) })
    }

    /// Pooled embedding of sequence `seq` (pooling other than `None`).
    pub fn embeddings_seq(&self, seq: usize) -> Option<&[f32]> {
        if !self.embeddings || seq >= self.n_seq_max() {
            return None;
        }
        let seq = seq as i32; // below n_seq_max, a u32
                              // SAFETY: the context is alive; llama.cpp returns null when there is no pooled output
                              // for `seq`.
        let p = unsafe { llama_sys::llama_get_embeddings_seq(self.as_ptr(), seq) };
        // SAFETY: a non-null row holds n_embd_out floats (n_cls_out for rank pooling, which is
        // never larger).
        NonNull::new(p).map(|p| unsafe { std::slice::from_raw_parts(p.as_ptr(), self.model.n_embd_out()) })
    }

    /// Turns embedding output on or off for later decodes.
    pub fn set_embeddings(&mut self, on: bool) {
        self.embeddings = on;
        // SAFETY: the context is alive.
        unsafe { llama_sys::llama_set_embeddings(self.as_ptr(), on) }
    }

    /// Switches between causal and non-causal attention for later decodes.
    pub fn set_causal_attention(&mut self, causal: bool) {
        // SAFETY: the context is alive.
        unsafe { llama_sys::llama_set_causal_attn(self.as_ptr(), causal) }
    }

    /// Changes the thread counts for generation and batch processing (each at least 1).
    pub fn set_threads(&mut self, n_threads: usize, n_threads_batch: usize) -> Result<(), ContextError> {
        let count = |n: usize| i32::try_from(n).ok().filter(|&n| n >= 1);
        let (Some(n_threads), Some(n_threads_batch)) = (count(n_threads), count(n_threads_batch)) else {
            return Err(ContextError::InvalidParam("thread counts must be in 1..=i32::MAX"));
        };
        // SAFETY: the context is alive; counts are positive.
        unsafe { llama_sys::llama_set_n_threads(self.as_ptr(), n_threads, n_threads_batch) };
        Ok(())
    }

    /// Current (generation, batch) thread counts.
    pub fn threads(&self) -> (usize, usize) {
        // SAFETY: the context is alive.
        let (n, batch) =
            unsafe { (llama_sys::llama_n_threads(self.as_ptr()), llama_sys::llama_n_threads_batch(self.as_ptr())) };
        (n.max(0) as usize, batch.max(0) as usize)
    }

    /// Installs a callback polled during [`decode`](Self::decode); returning `true` aborts it
    /// with [`DecodeError::Aborted`]. A panic in the callback aborts too
    /// ([`DecodeError::AbortCallbackPanicked`]). CPU backends honour it between graph nodes.
    ///
    /// ```no_run
    /// use std::sync::{atomic::{AtomicBool, Ordering}, Arc};
    /// # let model = llama::Model::load("m.gguf")?;
    /// let mut ctx = model.context(Default::default())?;
    /// let cancel = Arc::new(AtomicBool::new(false));
    /// let flag = cancel.clone();
    /// ctx.set_abort_callback(Some(move || flag.load(Ordering::Relaxed)));
    /// // another thread: cancel.store(true, Ordering::Relaxed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_abort_callback<F: FnMut() -> bool + Send + 'static>(&mut self, f: Option<F>) {
        unsafe extern "C" fn trampoline(data: *mut c_void) -> bool {
            // SAFETY: `data` is the boxed `AbortState` of the context that installed this
            // trampoline; llama.cpp only calls it inside decode/encode, which hold `&mut Context`,
            // so nothing else touches the state during the call.
            let state = unsafe { &mut *data.cast::<AbortState>() };
            match crate::barrier::catch_panic(|| (state.f)()) {
                Ok(stop) => stop,
                Err(message) => {
                    state.panicked = Some(message);
                    true
                }
            }
        }
        // SAFETY: the context is alive; clearing first means C never holds a stale pointer.
        unsafe { llama_sys::llama_set_abort_callback(self.as_ptr(), None, std::ptr::null_mut()) };
        self.abort = f.map(|f| Box::new(AbortState { f: Box::new(f), panicked: None }));
        if let Some(state) = self.abort.as_mut() {
            let data: *mut AbortState = &mut **state;
            // SAFETY: the Box keeps `data` at a fixed address until the callback is replaced
            // (cleared above first) or the context is dropped (Drop frees the C context first).
            unsafe { llama_sys::llama_set_abort_callback(self.as_ptr(), Some(trampoline), data.cast()) };
        }
    }

    fn clear_abort_panic(&mut self) {
        if let Some(a) = self.abort.as_mut() {
            a.panicked = None;
        }
    }

    /// Runs one throw-away decode so the first real one does not pay for lazy initialisation,
    /// then clears the cache and the timings.
    pub fn warmup(&mut self) -> Result<(), DecodeError> {
        let vocab = self.vocab();
        let token = vocab.bos().or(vocab.eos()).unwrap_or(Token(0));
        let mut batch = Batch::new(1, 1);
        batch.add(token, 0, &[0], Logits::Want)?;
        self.decode(&batch)?;
        // SAFETY: the context is alive. Book the warmup's timings now, so the reset drops them.
        unsafe { llama_sys::llama_synchronize(self.as_ptr()) };
        self.clear_kv();
        self.reset_perf();
        Ok(())
    }

    /// Timings since creation or the last [`reset_perf`](Self::reset_perf). Times stay 0
    /// unless the context was created with [`no_perf(false)`](ContextParams::no_perf)
    /// (llama.cpp's default skips timing); token counts are always kept.
    pub fn perf(&self) -> ContextPerf {
        // SAFETY: the context is alive. Timings are booked when pending work is synchronised,
        // so synchronise first; then read a plain struct.
        let d = unsafe {
            llama_sys::llama_synchronize(self.as_ptr());
            llama_sys::llama_perf_context(self.as_ptr())
        };
        ContextPerf {
            load_ms: d.t_load_ms,
            prompt_ms: d.t_p_eval_ms,
            prompt_tokens: d.n_p_eval,
            eval_ms: d.t_eval_ms,
            eval_tokens: d.n_eval,
            reused: d.n_reused,
        }
    }

    /// Resets the timings.
    pub fn reset_perf(&mut self) {
        // SAFETY: the context is alive.
        unsafe { llama_sys::llama_perf_context_reset(self.as_ptr()) }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the pointer came from llama_init_from_model and is freed once, before the
        // abort callback state and the model (fields dropped after this) go away.
        unsafe { llama_sys::llama_free(self.ptr.as_ptr()) }
    }
}
