//! Inference state: [`Context`] (KV cache, compute buffers, outputs) and [`ContextParams`].

use std::ptr::NonNull;

use crate::error::{ContextError, DecodeError};
use crate::{Batch, Model, Token, Vocab};

/// Options for [`Model::context`]. Defaults are llama.cpp's, except the thread counts, which
/// default to the cores this process may use (llama.cpp's fixed 4 loses speed on smaller and
/// larger machines alike).
///
/// ```
/// let params = llama::ContextParams::default().n_ctx(4096).n_threads(2);
/// ```
#[derive(Clone)]
#[must_use]
pub struct ContextParams {
    raw: llama_sys::llama_context_params,
}

impl std::fmt::Debug for ContextParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextParams")
            .field("n_ctx", &self.raw.n_ctx)
            .field("n_batch", &self.raw.n_batch)
            .field("n_ubatch", &self.raw.n_ubatch)
            .field("n_seq_max", &self.raw.n_seq_max)
            .field("n_threads", &self.raw.n_threads)
            .field("n_threads_batch", &self.raw.n_threads_batch)
            .finish_non_exhaustive()
    }
}

/// Cores available to this process (at least 1).
pub(crate) fn default_threads() -> i32 {
    std::thread::available_parallelism().map_or(1, |n| i32::try_from(n.get()).unwrap_or(i32::MAX))
}

impl Default for ContextParams {
    fn default() -> Self {
        crate::backend::ensure_init();
        // SAFETY: returns a plain struct by value.
        let mut raw = unsafe { llama_sys::llama_context_default_params() };
        raw.n_threads = default_threads();
        raw.n_threads_batch = default_threads();
        ContextParams { raw }
    }
}

impl ContextParams {
    /// Context length in tokens; 0 uses the model's training length.
    pub fn n_ctx(mut self, n: u32) -> Self {
        self.raw.n_ctx = n;
        self
    }

    /// Largest batch accepted by one [`Context::decode`] call.
    pub fn n_batch(mut self, n: u32) -> Self {
        self.raw.n_batch = n;
        self
    }

    /// Physical micro-batch size.
    pub fn n_ubatch(mut self, n: u32) -> Self {
        self.raw.n_ubatch = n;
        self
    }

    /// Number of distinct sequences the context can hold.
    pub fn n_seq_max(mut self, n: u32) -> Self {
        self.raw.n_seq_max = n;
        self
    }

    /// Threads for generation (single-token decodes) and for batches alike.
    pub fn n_threads(mut self, n: i32) -> Self {
        self.raw.n_threads = n;
        self.raw.n_threads_batch = n;
        self
    }

    /// Threads for batch (prompt) processing only.
    pub fn n_threads_batch(mut self, n: i32) -> Self {
        self.raw.n_threads_batch = n;
        self
    }

    /// Extract embeddings along with logits.
    pub fn embeddings(mut self, yes: bool) -> Self {
        self.raw.embeddings = yes;
        self
    }

    fn validate(&self) -> Result<(), ContextError> {
        if self.raw.n_threads < 1 || self.raw.n_threads_batch < 1 {
            return Err(ContextError::InvalidParam("thread counts must be at least 1"));
        }
        if self.raw.n_batch < 1 || self.raw.n_ubatch < 1 {
            return Err(ContextError::InvalidParam("n_batch and n_ubatch must be at least 1"));
        }
        // SAFETY: a pure query of a compile-time limit.
        let max_seq = unsafe { llama_sys::llama_max_parallel_sequences() };
        if self.raw.n_seq_max < 1 || self.raw.n_seq_max as usize > max_seq {
            return Err(ContextError::InvalidParam("n_seq_max must be in 1..=llama_max_parallel_sequences()"));
        }
        Ok(())
    }
}

/// An inference context on a [`Model`]: KV cache, compute buffers and the outputs of the last
/// decode.
///
/// Holds a handle to its model, so it can be stored or moved freely. `Send` but not `Sync`:
/// llama.cpp contexts are not safe to use from two threads at once.
///
/// ```no_run
/// use llama::{Batch, ContextParams, Model, Sampler};
/// let model = Model::load("model.gguf")?;
/// let mut ctx = model.context(ContextParams::default())?;
/// let tokens = model.vocab().tokenize("Once upon a time", true)?;
/// let mut batch = Batch::new(tokens.len(), 1);
/// batch.add_sequence(&tokens, 0, 0, true)?;
/// ctx.decode(&batch)?;
/// let next = Sampler::greedy().sample(&ctx, batch.len() as i32 - 1)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Context {
    ptr: NonNull<llama_sys::llama_context>,
    /// Batch indices whose outputs the last successful decode produced.
    outputs: Vec<bool>,
    n_vocab: i32,
    // Declared last: dropped after the context is freed.
    model: Model,
}

// SAFETY: a llama_context has no thread affinity (no thread-locals, no TLS-bound handles); it
// may be used from any thread as long as only one uses it at a time, which `&mut self` on
// every mutating method and the absence of `Sync` guarantee.
unsafe impl Send for Context {}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("n_ctx", &self.n_ctx()).field("model", &self.model).finish()
    }
}

impl Context {
    pub(crate) fn new(model: &Model, params: ContextParams) -> Result<Context, ContextError> {
        params.validate()?;
        // SAFETY: the model is alive (and kept alive by the clone stored below); params are
        // initialised from llama.cpp's defaults.
        let raw = unsafe { llama_sys::llama_init_from_model(model.as_ptr(), params.raw) };
        let ptr = NonNull::new(raw).ok_or(ContextError::Failed { n_ctx: params.raw.n_ctx })?;
        let n_vocab = model.vocab().n_tokens();
        Ok(Context { ptr, outputs: Vec::new(), n_vocab, model: model.clone() })
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
    pub fn n_ctx(&self) -> u32 {
        // SAFETY: the context is alive.
        unsafe { llama_sys::llama_n_ctx(self.as_ptr()) }
    }

    /// Largest batch [`decode`](Self::decode) accepts.
    pub fn n_batch(&self) -> u32 {
        // SAFETY: the context is alive.
        unsafe { llama_sys::llama_n_batch(self.as_ptr()) }
    }

    /// Number of sequences the context can hold.
    pub fn n_seq_max(&self) -> u32 {
        // SAFETY: the context is alive.
        unsafe { llama_sys::llama_n_seq_max(self.as_ptr()) }
    }

    /// Runs the model on `batch`, appending it to the KV cache.
    ///
    /// The batch is validated first (size, token ids, sequence ids), so llama.cpp never sees
    /// input that would make it abort.
    pub fn decode(&mut self, batch: &Batch) -> Result<(), DecodeError> {
        if batch.is_empty() {
            return Err(DecodeError::Empty);
        }
        let n_batch = self.n_batch();
        if batch.len() > n_batch as usize {
            return Err(DecodeError::TooLarge { len: batch.len(), n_batch });
        }
        if let Some(&bad) = batch.tokens().iter().find(|t| !(0..self.n_vocab).contains(&t.0)) {
            return Err(DecodeError::InvalidToken { token: bad.0, n_vocab: self.n_vocab });
        }
        let n_seq_max = self.n_seq_max();
        for i in 0..batch.len() {
            if let Some(&seq) = batch.seq_ids(i).iter().find(|&&s| s as u32 >= n_seq_max) {
                return Err(DecodeError::InvalidSeqId { seq, n_seq_max });
            }
        }
        self.outputs.clear();
        // SAFETY: the context is alive and exclusively borrowed; the batch's arrays are valid
        // for `len` entries and were validated above.
        let rc = unsafe { llama_sys::llama_decode(self.as_ptr(), batch.raw()) };
        match rc {
            0 => {
                self.outputs.extend(batch.output_flags().iter().map(|&f| f != 0));
                Ok(())
            }
            1 => Err(DecodeError::NoKvSlot),
            2 => Err(DecodeError::Aborted),
            -1 => Err(DecodeError::InvalidBatch),
            rc => Err(DecodeError::Fatal(rc)),
        }
    }

    /// Logits (one per vocabulary entry) for batch entry `i` of the last decode; negative `i`
    /// counts from the end. `None` if that entry did not ask for output.
    pub fn logits_ith(&self, i: i32) -> Option<&[f32]> {
        let idx = if i < 0 { self.outputs.len().checked_sub(i.unsigned_abs() as usize)? } else { i as usize };
        if !*self.outputs.get(idx)? {
            return None;
        }
        // SAFETY: entry `idx` of the last successful decode asked for output, so llama.cpp has
        // a row of n_vocab logits for it, valid until the next decode (which needs `&mut self`).
        let p = unsafe { llama_sys::llama_get_logits_ith(self.as_ptr(), idx as i32) };
        // SAFETY: non-null rows hold n_vocab floats.
        NonNull::new(p).map(|p| unsafe { std::slice::from_raw_parts(p.as_ptr(), self.n_vocab as usize) })
    }

    /// Batch index of output entry `i` if it is valid for sampling (used by samplers).
    pub(crate) fn output_index(&self, i: i32) -> Option<i32> {
        let idx = if i < 0 { self.outputs.len().checked_sub(i.unsigned_abs() as usize)? } else { i as usize };
        (*self.outputs.get(idx)?).then_some(idx as i32)
    }

    /// Empties the KV cache (all sequences).
    pub fn clear_kv(&mut self) {
        // SAFETY: the context is alive; every context created by llama_init_from_model for a
        // decoder model has a memory, and llama_memory_clear accepts null.
        unsafe {
            let mem = llama_sys::llama_get_memory(self.as_ptr());
            llama_sys::llama_memory_clear(mem, true);
        }
        self.outputs.clear();
    }

    /// The last token id this context can be fed: `n_vocab - 1`.
    pub fn n_vocab(&self) -> i32 {
        self.n_vocab
    }

    /// Whether `token` ends generation.
    pub fn is_eog(&self, token: Token) -> bool {
        self.vocab().is_eog(token)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the pointer came from llama_init_from_model, is freed once, and the model it
        // refers to is still alive (`self.model` is dropped after this).
        unsafe { llama_sys::llama_free(self.ptr.as_ptr()) }
    }
}
