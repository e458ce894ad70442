//! One error enum per concern.

use std::path::PathBuf;

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be opened or read.
    #[error("cannot read model file {path}: {source}")]
    Io {
        /// The path given.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic.
    #[error("{0} is not a GGUF file")]
    NotGguf(PathBuf),
    /// The file is GGUF but malformed (truncated, inconsistent, or with values llama.cpp's loader
    /// would crash on); it was refused before llama.cpp saw it.
    #[error("{path} is not a valid GGUF model: {what}")]
    Malformed {
        /// The path given.
        path: PathBuf,
        /// What is wrong, naming the key or tensor at fault.
        what: String,
    },
    /// The path contains a NUL byte and cannot be passed to C.
    #[error("model path contains a NUL byte")]
    InvalidPath,
    /// A loading option is out of range.
    #[error("invalid model parameter: {0}")]
    InvalidParam(&'static str),
    /// A tensor-override pattern ([`ModelBuilder::override_tensor`](crate::ModelBuilder::override_tensor))
    /// is not a valid regular expression.
    #[error("invalid tensor override pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The pattern given.
        pattern: String,
        /// Why the regex engine refused it.
        reason: String,
    },
    /// An RPC server the model was to be placed on cannot be used.
    #[error(transparent)]
    Rpc(#[from] crate::rpc::RpcError),
    /// The progress callback asked to stop.
    #[error("model loading was cancelled")]
    Cancelled,
    /// The progress callback panicked; loading was stopped. Carries the panic's message.
    #[error("model loading progress callback panicked: {0}")]
    CallbackPanicked(String),
    /// llama.cpp refused the file (corrupt or truncated data, unsupported architecture, out of
    /// memory...); `reason` is what llama.cpp logged.
    #[error("llama.cpp could not load {}: {}", path.display(), if reason.is_empty() { "corrupt, truncated, or unsupported model" } else { reason })]
    Rejected {
        /// The path given.
        path: PathBuf,
        /// llama.cpp's error messages, joined.
        reason: String,
    },
}

/// Why [`Model::save`](crate::Model::save) wrote nothing. No partial file is left at the
/// path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// The path contains a NUL byte.
    #[error("path contains a NUL byte")]
    InvalidPath,
    /// llama.cpp could not write the file; `reason` is what it logged.
    #[error("llama.cpp could not write {}: {}", path.display(), if reason.is_empty() { "no reason given" } else { reason })]
    Rejected {
        /// The path given.
        path: PathBuf,
        /// llama.cpp's error messages, joined.
        reason: String,
    },
    /// The complete file could not be moved into place.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The path given.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Why a context could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// A parameter is out of range.
    #[error("invalid context parameter: {0}")]
    InvalidParam(&'static str),
    /// llama.cpp failed to create the context (usually out of memory for the KV cache).
    #[error("llama.cpp could not create the context (out of memory for n_ctx = {n_ctx}?)")]
    Failed {
        /// The context size requested (0 = the model's training size).
        n_ctx: usize,
    },
}

/// Why text could not be tokenized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizeError {
    /// The text is longer than llama.cpp can address (`i32::MAX` bytes).
    #[error("text of {0} bytes is too long to tokenize")]
    TooLong(usize),
    /// llama.cpp reported a failure it did not explain.
    #[error("tokenization failed (code {0})")]
    Failed(i32),
    /// A token id is not in the vocabulary.
    #[error("token id {token} is outside the vocabulary (size {n_vocab})")]
    InvalidToken {
        /// The offending id.
        token: i32,
        /// Vocabulary size.
        n_vocab: usize,
    },
    /// llama.cpp threw a C++ exception (caught at the FFI boundary).
    #[error("llama.cpp threw while tokenizing: {0}")]
    Exception(String),
}

/// Why a token could not be added to a [`Batch`](crate::Batch).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchError {
    /// The batch already holds as many tokens as its capacity.
    #[error("batch is full (capacity {0})")]
    Full(usize),
    /// A position is beyond what llama.cpp's position type (`i32`) holds.
    #[error("position {0} is beyond the largest llama.cpp can hold ({max})", max = i32::MAX)]
    PositionTooLarge(usize),
    /// A sequence id is beyond what llama.cpp's sequence-id type (`i32`) holds.
    #[error("sequence id {0} is beyond the largest llama.cpp can hold ({max})", max = i32::MAX)]
    SeqIdTooLarge(usize),
    /// A token needs at least one sequence id, and at most the batch's `n_seq_max`.
    #[error("a token needs 1..={max} sequence ids, got {got}")]
    SeqIdCount {
        /// How many were given.
        got: usize,
        /// The batch's limit.
        max: usize,
    },
    /// A token was added to an embeddings batch, or an embedding to a token batch.
    #[error("this batch holds {0}; create it with the matching constructor")]
    WrongInput(&'static str),
    /// The batch is too large: more than [`MAX_BATCH`](crate::MAX_BATCH) entries, an
    /// embedding width beyond `i32`, or more bytes than can be addressed.
    #[error("a batch of {capacity} entries (embedding width {n_embd}) is too large")]
    TooLarge {
        /// Entries asked for.
        capacity: usize,
        /// Embedding width (0 for a token batch).
        n_embd: usize,
    },
    /// The memory for the batch could not be allocated.
    #[error("could not allocate {bytes} bytes for a batch")]
    AllocFailed {
        /// Size of the allocation that failed.
        bytes: usize,
    },
    /// An embedding row has the wrong width.
    #[error("embedding row of width {got}, batch expects {expected}")]
    EmbeddingWidth {
        /// Width given.
        got: usize,
        /// Width the batch was created for.
        expected: usize,
    },
}

/// Why [`Context::decode`](crate::Context::decode) failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The batch holds no tokens.
    #[error("cannot decode an empty batch")]
    Empty,
    /// The batch has more tokens than the context's `n_batch`.
    #[error("batch of {len} tokens exceeds the context's n_batch of {n_batch}")]
    TooLarge {
        /// Tokens in the batch.
        len: usize,
        /// The context's logical batch size.
        n_batch: usize,
    },
    /// A token id is not in the model's vocabulary.
    #[error("token id {token} is outside the vocabulary (size {n_vocab})")]
    InvalidToken {
        /// The offending id.
        token: i32,
        /// Vocabulary size.
        n_vocab: usize,
    },
    /// An embeddings batch's row width differs from the model's embedding size.
    #[error("embedding rows of width {got} do not match the model's n_embd = {expected}")]
    EmbeddingWidth {
        /// The batch's row width.
        got: usize,
        /// The model's width.
        expected: usize,
    },
    /// [`Context::encode`](crate::Context::encode) on a model without an encoder.
    #[error("the model has no encoder")]
    NoEncoder,
    /// The abort callback panicked; the decode was aborted. Carries the panic's message.
    #[error("the abort callback panicked ({0}); decode aborted")]
    AbortCallbackPanicked(String),
    /// A sequence id is not below the context's `n_seq_max`.
    #[error("sequence id {seq} is not below n_seq_max = {n_seq_max}")]
    InvalidSeqId {
        /// The offending id.
        seq: usize,
        /// The context's limit.
        n_seq_max: usize,
    },
    /// No room in the KV cache for the batch. The cache is left as it was: free space (e.g.
    /// `seq_rm`) or use a larger context, then retry.
    #[error("no KV-cache slot for the batch (context full); the cache is unchanged")]
    NoKvSlot,
    /// The abort callback stopped the decode. Micro-batches already processed stay in the cache.
    #[error("decode aborted; processed micro-batches remain in the KV cache")]
    Aborted,
    /// llama.cpp rejected the batch (e.g. positions that do not follow the cache). The cache is
    /// unchanged.
    #[error("llama.cpp rejected the batch as invalid; the cache is unchanged")]
    InvalidBatch,
    /// A fatal error inside llama.cpp; processed micro-batches stay in the cache.
    #[error("llama.cpp decode failed (code {0}); processed micro-batches remain in the KV cache")]
    Fatal(i32),
    /// A batch for the tokens could not be built (see [`Context::decode_tokens`](crate::Context::decode_tokens)).
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// llama.cpp threw a C++ exception (caught at the FFI boundary); processed micro-batches stay
    /// in the cache.
    #[error("llama.cpp threw during decode: {0}; processed micro-batches remain in the KV cache")]
    Exception(String),
}

/// Why a chat template could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The model has no chat template and none was given.
    #[error("the model has no chat template")]
    NoTemplate,
    /// A role, content or template contains a NUL byte.
    #[error("chat text contains a NUL byte")]
    NulByte,
    /// llama.cpp does not recognise the template (it only supports its built-in list), or the
    /// template rewrites message contents so they cannot be kept apart from its own text.
    #[error("chat template not supported")]
    Unsupported,
    /// The Jinja template failed to render.
    #[error("chat template failed to render: {0}")]
    Render(String),
    /// A message could not be tokenized.
    #[error(transparent)]
    Tokenize(TokenizeError),
}

/// Why a token could not be sampled.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SampleError {
    /// The chain has no sampler that selects a token.
    #[error("the sampler chain is empty")]
    EmptyChain,
    /// The last decode produced no logits there.
    #[error("no logits for {0}: the last decode did not ask for output there")]
    NoLogits(crate::Output),
    /// The chain ran but no sampler selected a token (end the chain with greedy, dist, ...).
    #[error("no sampler in the chain selected a token (end it with greedy_pick, dist, mirostat...)")]
    NoSelection,
    /// llama.cpp refused the step: a grammar rejected the token, or has no valid continuation.
    #[error("the sampler rejected the token (grammar violation or dead end)")]
    Rejected,
    /// A Rust sampler in the chain panicked. Carries the panic's message.
    #[error("a custom sampler panicked: {0}")]
    CustomPanicked(String),
}

/// Why a KV-cache (memory) operation was refused. Nothing was changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemoryError {
    /// A sequence id is not below the context's `n_seq_max`.
    #[error("sequence id {seq} is not in 0..{n_seq_max}")]
    InvalidSeqId {
        /// The offending id.
        seq: usize,
        /// The context's limit.
        n_seq_max: usize,
    },
    /// A position range is reversed, or starts beyond the positions llama.cpp can hold.
    #[error("invalid position range {start}..{}", end.map_or(String::new(), |e| e.to_string()))]
    InvalidRange {
        /// First position (inclusive).
        start: usize,
        /// End position (exclusive; `None` = open).
        end: Option<usize>,
    },
    /// The memory (e.g. a recurrent model's state) cannot drop part of a sequence.
    #[error("this model's memory cannot remove part of a sequence")]
    PartialRemoveUnsupported,
    /// Copying part of a sequence between sequences needs a unified KV cache when
    /// `n_seq_max > 1` (set [`ContextParams::kv_unified`](crate::ContextParams::kv_unified)).
    #[error("partial copies between sequences need ContextParams::kv_unified(true)")]
    PartialCopyNeedsUnifiedCache,
    /// This model's memory does not support shifting positions (e.g. M-RoPE or recurrent).
    #[error("this model's memory does not support shifting or dividing positions")]
    ShiftUnsupported,
    /// Position divisor must be at least 1.
    #[error("position divisor must be at least 1, got {0}")]
    InvalidDivisor(usize),
}

/// Why a context state could not be saved or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// llama.cpp rejected the data: corrupted, truncated, or saved from a different model or
    /// context shape. The KV cache is cleared (or the sequence removed) so no partial state
    /// remains.
    #[error("state data rejected (corrupt, or saved from a different model/context)")]
    Rejected,
    /// Writing the state failed inside llama.cpp.
    #[error("llama.cpp failed to save the state")]
    SaveFailed,
    /// The session file holds more tokens than the capacity given.
    #[error("state file could not be read or holds more than {0} tokens")]
    FileRejected(usize),
    /// A path contains a NUL byte.
    #[error("path contains a NUL byte")]
    InvalidPath,
    /// A sequence id is out of range.
    #[error(transparent)]
    Memory(#[from] MemoryError),
}
