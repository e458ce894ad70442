//! [`ContextParams`]: every llama.cpp context option as a builder.

use crate::error::ContextError;

/// How embeddings of a sequence are pooled into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolingType {
    /// Use the model's default.
    Unspecified,
    /// No pooling: one embedding per token.
    None,
    /// Mean of the token embeddings.
    Mean,
    /// The first (CLS) token's embedding.
    Cls,
    /// The last token's embedding.
    Last,
    /// Classification head output (rerankers).
    Rank,
}

/// Attention pattern used for embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttentionType {
    /// Use the model's default.
    Unspecified,
    /// Each token sees only earlier tokens.
    Causal,
    /// Each token sees the whole sequence.
    NonCausal,
}

/// When to use Flash Attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlashAttention {
    /// Let llama.cpp decide per backend (its default).
    Auto,
    /// Never.
    Disabled,
    /// Always.
    Enabled,
}

/// RoPE context-extension method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RopeScaling {
    /// Use the model's setting.
    Unspecified,
    /// No scaling.
    None,
    /// Linear position interpolation.
    Linear,
    /// YaRN.
    Yarn,
    /// LongRoPE.
    LongRope,
}

/// Element type of the K or V cache, spelled as ggml spells it (as [`Ftype`](crate::Ftype) and
/// [`TensorType`](crate::TensorType) are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[allow(non_camel_case_types)]
pub enum KvCacheType {
    /// 32-bit float.
    F32,
    /// 16-bit float (llama.cpp's default).
    F16,
    /// bfloat16.
    BF16,
    /// 8-bit blocks.
    Q8_0,
    /// 4-bit blocks.
    Q4_0,
    /// 4-bit blocks with offset.
    Q4_1,
    /// 4-bit non-linear.
    IQ4_NL,
    /// 5-bit blocks.
    Q5_0,
    /// 5-bit blocks with offset.
    Q5_1,
}

impl KvCacheType {
    fn raw(self) -> llama_sys::ggml_type {
        use llama_sys::*;
        match self {
            KvCacheType::F32 => GGML_TYPE_F32,
            KvCacheType::F16 => GGML_TYPE_F16,
            KvCacheType::BF16 => GGML_TYPE_BF16,
            KvCacheType::Q8_0 => GGML_TYPE_Q8_0,
            KvCacheType::Q4_0 => GGML_TYPE_Q4_0,
            KvCacheType::Q4_1 => GGML_TYPE_Q4_1,
            KvCacheType::IQ4_NL => GGML_TYPE_IQ4_NL,
            KvCacheType::Q5_0 => GGML_TYPE_Q5_0,
            KvCacheType::Q5_1 => GGML_TYPE_Q5_1,
        }
    }
}

/// Options for [`Model::context`](crate::Model::context).
///
/// Defaults are llama.cpp's, except the thread counts, which default to the cores this process
/// may use (llama.cpp's fixed 4 loses speed on smaller and larger machines alike).
///
/// ```
/// use llama::{ContextParams, FlashAttention};
/// let params = ContextParams::default().n_ctx(4096).n_threads(2).flash_attention(FlashAttention::Enabled);
/// assert_eq!(params.get_n_ctx(), 4096);
/// ```
#[derive(Clone)]
#[must_use]
pub struct ContextParams {
    pub(crate) raw: llama_sys::llama_context_params,
}

// SAFETY: the raw params hold only plain values here: the builder never sets the callback or
// pointer fields (cb_eval, abort_callback, samplers, ctx_other), which stay null.
unsafe impl Send for ContextParams {}
// SAFETY: as above; shared references only read plain values.
unsafe impl Sync for ContextParams {}

impl std::fmt::Debug for ContextParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextParams")
            .field("n_ctx", &self.raw.n_ctx)
            .field("n_batch", &self.raw.n_batch)
            .field("n_ubatch", &self.raw.n_ubatch)
            .field("n_seq_max", &self.raw.n_seq_max)
            .field("n_threads", &self.raw.n_threads)
            .field("n_threads_batch", &self.raw.n_threads_batch)
            .field("embeddings", &self.raw.embeddings)
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

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty => $field:ident) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.raw.$field = value;
            self
        }
    };
}

impl ContextParams {
    setter!(
        /// Context length in tokens; 0 uses the model's training length.
        n_ctx: u32 => n_ctx
    );
    setter!(
        /// Largest batch accepted by one [`Context::decode`](crate::Context::decode) call.
        n_batch: u32 => n_batch
    );
    setter!(
        /// Physical micro-batch size.
        n_ubatch: u32 => n_ubatch
    );
    setter!(
        /// Number of distinct sequences the context can hold.
        n_seq_max: u32 => n_seq_max
    );
    setter!(
        /// Threads for batch (prompt) processing only.
        n_threads_batch: i32 => n_threads_batch
    );
    setter!(
        /// Also extract embeddings (see [`Context::embeddings`](crate::Context::embeddings)).
        embeddings: bool => embeddings
    );
    setter!(
        /// Offload the KQV ops and the KV cache to the GPU (default on).
        offload_kqv: bool => offload_kqv
    );
    setter!(
        /// Offload host tensor operations to the device (default on).
        op_offload: bool => op_offload
    );
    setter!(
        /// Full-size cache for sliding-window-attention layers (needed to roll back SWA models).
        swa_full: bool => swa_full
    );
    setter!(
        /// One KV buffer shared by all sequences. Needed to copy partial ranges between sequences
        /// ([`Context::kv_seq_cp`](crate::Context::kv_seq_cp)) when `n_seq_max > 1`.
        kv_unified: bool => kv_unified
    );
    setter!(
        /// Skip performance timing.
        no_perf: bool => no_perf
    );
    setter!(
        /// RoPE base frequency; 0 uses the model's.
        rope_freq_base: f32 => rope_freq_base
    );
    setter!(
        /// RoPE frequency scale; 0 uses the model's.
        rope_freq_scale: f32 => rope_freq_scale
    );
    setter!(
        /// YaRN extrapolation mix; negative uses the model's.
        yarn_ext_factor: f32 => yarn_ext_factor
    );
    setter!(
        /// YaRN magnitude scaling.
        yarn_attn_factor: f32 => yarn_attn_factor
    );
    setter!(
        /// YaRN low correction dimension.
        yarn_beta_fast: f32 => yarn_beta_fast
    );
    setter!(
        /// YaRN high correction dimension.
        yarn_beta_slow: f32 => yarn_beta_slow
    );
    setter!(
        /// YaRN original context size.
        yarn_orig_ctx: u32 => yarn_orig_ctx
    );

    /// Threads for generation (single-token decodes) and for batches alike.
    pub fn n_threads(mut self, n: i32) -> Self {
        self.raw.n_threads = n;
        self.raw.n_threads_batch = n;
        self
    }

    /// Pooling of sequence embeddings.
    pub fn pooling(mut self, p: PoolingType) -> Self {
        use llama_sys::*;
        self.raw.pooling_type = match p {
            PoolingType::Unspecified => LLAMA_POOLING_TYPE_UNSPECIFIED,
            PoolingType::None => LLAMA_POOLING_TYPE_NONE,
            PoolingType::Mean => LLAMA_POOLING_TYPE_MEAN,
            PoolingType::Cls => LLAMA_POOLING_TYPE_CLS,
            PoolingType::Last => LLAMA_POOLING_TYPE_LAST,
            PoolingType::Rank => LLAMA_POOLING_TYPE_RANK,
        };
        self
    }

    /// Attention pattern for embeddings.
    pub fn attention(mut self, a: AttentionType) -> Self {
        use llama_sys::*;
        self.raw.attention_type = match a {
            AttentionType::Unspecified => LLAMA_ATTENTION_TYPE_UNSPECIFIED,
            AttentionType::Causal => LLAMA_ATTENTION_TYPE_CAUSAL,
            AttentionType::NonCausal => LLAMA_ATTENTION_TYPE_NON_CAUSAL,
        };
        self
    }

    /// Flash Attention mode (default [`FlashAttention::Auto`]).
    pub fn flash_attention(mut self, f: FlashAttention) -> Self {
        use llama_sys::*;
        self.raw.flash_attn_type = match f {
            FlashAttention::Auto => LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttention::Disabled => LLAMA_FLASH_ATTN_TYPE_DISABLED,
            FlashAttention::Enabled => LLAMA_FLASH_ATTN_TYPE_ENABLED,
        };
        self
    }

    /// RoPE scaling method.
    pub fn rope_scaling(mut self, r: RopeScaling) -> Self {
        use llama_sys::*;
        self.raw.rope_scaling_type = match r {
            RopeScaling::Unspecified => LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED,
            RopeScaling::None => LLAMA_ROPE_SCALING_TYPE_NONE,
            RopeScaling::Linear => LLAMA_ROPE_SCALING_TYPE_LINEAR,
            RopeScaling::Yarn => LLAMA_ROPE_SCALING_TYPE_YARN,
            RopeScaling::LongRope => LLAMA_ROPE_SCALING_TYPE_LONGROPE,
        };
        self
    }

    /// Element types of the K and V caches (quantized caches need Flash Attention for V).
    pub fn kv_cache_type(mut self, k: KvCacheType, v: KvCacheType) -> Self {
        self.raw.type_k = k.raw();
        self.raw.type_v = v.raw();
        self
    }

    /// The context length asked for (0 = model's).
    pub fn get_n_ctx(&self) -> u32 {
        self.raw.n_ctx
    }

    /// The generation thread count.
    pub fn get_n_threads(&self) -> i32 {
        self.raw.n_threads
    }

    pub(crate) fn validate(&self) -> Result<(), ContextError> {
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
