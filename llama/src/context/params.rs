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

/// Names as llama.cpp's tools take them (`f16`, `q8_0`, ...), in any case.
///
/// ```
/// assert_eq!("q8_0".parse(), Ok(llama::KvCacheType::Q8_0));
/// ```
impl std::str::FromStr for KvCacheType {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        const ALL: [(&str, KvCacheType); 9] = [
            ("f32", KvCacheType::F32),
            ("f16", KvCacheType::F16),
            ("bf16", KvCacheType::BF16),
            ("q8_0", KvCacheType::Q8_0),
            ("q4_0", KvCacheType::Q4_0),
            ("q4_1", KvCacheType::Q4_1),
            ("iq4_nl", KvCacheType::IQ4_NL),
            ("q5_0", KvCacheType::Q5_0),
            ("q5_1", KvCacheType::Q5_1),
        ];
        ALL.iter().find(|(name, _)| name.eq_ignore_ascii_case(s)).map(|&(_, t)| t).ok_or_else(|| UnknownName {
            name: s.to_string(),
            expected: "f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1",
        })
    }
}

/// `on`, `off` or `auto`, as llama.cpp's `--flash-attn` takes them.
///
/// ```
/// assert_eq!("off".parse(), Ok(llama::FlashAttention::Disabled));
/// ```
impl std::str::FromStr for FlashAttention {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s.to_ascii_lowercase().as_str() {
            "on" | "enabled" => Ok(FlashAttention::Enabled),
            "off" | "disabled" => Ok(FlashAttention::Disabled),
            "auto" => Ok(FlashAttention::Auto),
            _ => Err(UnknownName { name: s.to_string(), expected: "on, off, auto" }),
        }
    }
}

/// A name that is none of a parameter's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {name:?}: expected one of {expected}")]
pub struct UnknownName {
    name: String,
    expected: &'static str,
}

/// Options for [`Model::context`](crate::Model::context): read and set them as fields, or chain
/// the setters of the same names.
///
/// Defaults are llama.cpp's, except the thread counts, which default to the cores this process
/// may use (llama.cpp's fixed 4 loses speed on smaller and larger machines alike). Values are
/// checked when the context is created ([`ContextError::InvalidParam`]).
///
/// ```
/// use llama::{ContextParams, FlashAttention};
/// let mut params = ContextParams::default().n_ctx(4096).n_threads(2).flash_attention(FlashAttention::Enabled);
/// params.n_batch = 1024;
/// assert_eq!((params.n_ctx, params.n_threads, params.n_batch), (4096, 2, 1024));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[must_use]
pub struct ContextParams {
    /// Context length in tokens; 0 uses the model's training length.
    pub n_ctx: usize,
    /// Largest batch accepted by one [`Context::decode`](crate::Context::decode) call.
    pub n_batch: usize,
    /// Physical micro-batch size.
    pub n_ubatch: usize,
    /// Number of distinct sequences the context can hold.
    pub n_seq_max: usize,
    /// Threads for generation (single-token decodes). The setter of the same name sets
    /// [`n_threads_batch`](Self::n_threads_batch) too.
    pub n_threads: usize,
    /// Threads for batch (prompt) processing.
    pub n_threads_batch: usize,
    /// Also extract embeddings (see [`Context::embeddings`](crate::Context::embeddings)).
    pub embeddings: bool,
    /// Offload the KQV ops and the KV cache to the GPU (default on).
    pub offload_kqv: bool,
    /// Offload host tensor operations to the device (default on).
    pub op_offload: bool,
    /// Full-size cache for sliding-window-attention layers (needed to roll back SWA models).
    pub swa_full: bool,
    /// One KV buffer shared by all sequences. Needed to copy partial ranges between sequences
    /// ([`Context::kv_seq_cp`](crate::Context::kv_seq_cp)) when `n_seq_max > 1`.
    pub kv_unified: bool,
    /// Skip performance timing.
    pub no_perf: bool,
    /// RoPE base frequency; 0 uses the model's.
    pub rope_freq_base: f32,
    /// RoPE frequency scale; 0 uses the model's.
    pub rope_freq_scale: f32,
    /// YaRN extrapolation mix; negative uses the model's.
    pub yarn_ext_factor: f32,
    /// YaRN magnitude scaling.
    pub yarn_attn_factor: f32,
    /// YaRN low correction dimension.
    pub yarn_beta_fast: f32,
    /// YaRN high correction dimension.
    pub yarn_beta_slow: f32,
    /// YaRN original context size (0 = the model's).
    pub yarn_orig_ctx: usize,
    /// Pooling of sequence embeddings.
    pub pooling: PoolingType,
    /// Attention pattern for embeddings.
    pub attention: AttentionType,
    /// Flash Attention mode (default [`FlashAttention::Auto`]).
    pub flash_attention: FlashAttention,
    /// RoPE scaling method.
    pub rope_scaling: RopeScaling,
    /// Element type of the K cache (default F16).
    pub type_k: KvCacheType,
    /// Element type of the V cache (default F16; quantized V caches need Flash Attention).
    pub type_v: KvCacheType,
}

/// Cores available to this process (at least 1).
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for ContextParams {
    fn default() -> Self {
        crate::backend::ensure_init();
        // SAFETY: returns a plain struct by value.
        let raw = unsafe { llama_sys::llama_context_default_params() };
        ContextParams {
            n_ctx: raw.n_ctx as usize,
            n_batch: raw.n_batch as usize,
            n_ubatch: raw.n_ubatch as usize,
            n_seq_max: raw.n_seq_max as usize,
            n_threads: default_threads(),
            n_threads_batch: default_threads(),
            embeddings: raw.embeddings,
            offload_kqv: raw.offload_kqv,
            op_offload: raw.op_offload,
            swa_full: raw.swa_full,
            kv_unified: raw.kv_unified,
            no_perf: raw.no_perf,
            rope_freq_base: raw.rope_freq_base,
            rope_freq_scale: raw.rope_freq_scale,
            yarn_ext_factor: raw.yarn_ext_factor,
            yarn_attn_factor: raw.yarn_attn_factor,
            yarn_beta_fast: raw.yarn_beta_fast,
            yarn_beta_slow: raw.yarn_beta_slow,
            yarn_orig_ctx: raw.yarn_orig_ctx as usize,
            // llama.cpp's defaults for these, checked against `raw` in a test.
            pooling: PoolingType::Unspecified,
            attention: AttentionType::Unspecified,
            flash_attention: FlashAttention::Auto,
            rope_scaling: RopeScaling::Unspecified,
            type_k: KvCacheType::F16,
            type_v: KvCacheType::F16,
        }
    }
}

macro_rules! setters {
    ($($name:ident: $ty:ty),* $(,)?) => {
        $(
            #[doc = concat!("Sets [`", stringify!($name), "`](Self::", stringify!($name), ").")]
            pub fn $name(mut self, value: $ty) -> Self {
                self.$name = value;
                self
            }
        )*
    };
}

impl ContextParams {
    setters!(
        n_ctx: usize,
        n_batch: usize,
        n_ubatch: usize,
        n_seq_max: usize,
        n_threads_batch: usize,
        embeddings: bool,
        offload_kqv: bool,
        op_offload: bool,
        swa_full: bool,
        kv_unified: bool,
        no_perf: bool,
        rope_freq_base: f32,
        rope_freq_scale: f32,
        yarn_ext_factor: f32,
        yarn_attn_factor: f32,
        yarn_beta_fast: f32,
        yarn_beta_slow: f32,
        yarn_orig_ctx: usize,
        pooling: PoolingType,
        attention: AttentionType,
        flash_attention: FlashAttention,
        rope_scaling: RopeScaling,
    );

    /// Threads for generation (single-token decodes) and for batches alike.
    pub fn n_threads(mut self, n: usize) -> Self {
        self.n_threads = n;
        self.n_threads_batch = n;
        self
    }

    /// Element types of the K and V caches (quantized V caches need Flash Attention).
    pub fn kv_cache_type(mut self, k: KvCacheType, v: KvCacheType) -> Self {
        self.type_k = k;
        self.type_v = v;
        self
    }

    /// llama.cpp's parameters, or which value is out of range.
    pub(crate) fn raw(&self) -> Result<llama_sys::llama_context_params, ContextError> {
        use llama_sys::*;
        let u32_of = |n: usize, what| u32::try_from(n).map_err(|_| ContextError::InvalidParam(what));
        let threads = |n: usize| i32::try_from(n).ok().filter(|&n| n >= 1);
        let (Some(n_threads), Some(n_threads_batch)) = (threads(self.n_threads), threads(self.n_threads_batch)) else {
            return Err(ContextError::InvalidParam("thread counts must be in 1..=i32::MAX"));
        };
        if self.n_batch < 1 || self.n_ubatch < 1 {
            return Err(ContextError::InvalidParam("n_batch and n_ubatch must be at least 1"));
        }
        // SAFETY: a pure query of a compile-time limit.
        let max_seq = unsafe { llama_max_parallel_sequences() };
        if self.n_seq_max < 1 || self.n_seq_max > max_seq {
            return Err(ContextError::InvalidParam("n_seq_max must be in 1..=llama_max_parallel_sequences()"));
        }
        // SAFETY: returns a plain struct by value; the callback and pointer fields stay null.
        let mut raw = unsafe { llama_context_default_params() };
        raw.n_ctx = u32_of(self.n_ctx, "n_ctx must fit a u32")?;
        raw.n_batch = u32_of(self.n_batch, "n_batch must fit a u32")?;
        raw.n_ubatch = u32_of(self.n_ubatch, "n_ubatch must fit a u32")?;
        raw.n_seq_max = self.n_seq_max as u32;
        raw.n_threads = n_threads;
        raw.n_threads_batch = n_threads_batch;
        raw.embeddings = self.embeddings;
        raw.offload_kqv = self.offload_kqv;
        raw.op_offload = self.op_offload;
        raw.swa_full = self.swa_full;
        raw.kv_unified = self.kv_unified;
        raw.no_perf = self.no_perf;
        raw.rope_freq_base = self.rope_freq_base;
        raw.rope_freq_scale = self.rope_freq_scale;
        raw.yarn_ext_factor = self.yarn_ext_factor;
        raw.yarn_attn_factor = self.yarn_attn_factor;
        raw.yarn_beta_fast = self.yarn_beta_fast;
        raw.yarn_beta_slow = self.yarn_beta_slow;
        raw.yarn_orig_ctx = u32_of(self.yarn_orig_ctx, "yarn_orig_ctx must fit a u32")?;
        raw.pooling_type = match self.pooling {
            PoolingType::Unspecified => LLAMA_POOLING_TYPE_UNSPECIFIED,
            PoolingType::None => LLAMA_POOLING_TYPE_NONE,
            PoolingType::Mean => LLAMA_POOLING_TYPE_MEAN,
            PoolingType::Cls => LLAMA_POOLING_TYPE_CLS,
            PoolingType::Last => LLAMA_POOLING_TYPE_LAST,
            PoolingType::Rank => LLAMA_POOLING_TYPE_RANK,
        };
        raw.attention_type = match self.attention {
            AttentionType::Unspecified => LLAMA_ATTENTION_TYPE_UNSPECIFIED,
            AttentionType::Causal => LLAMA_ATTENTION_TYPE_CAUSAL,
            AttentionType::NonCausal => LLAMA_ATTENTION_TYPE_NON_CAUSAL,
        };
        raw.flash_attn_type = match self.flash_attention {
            FlashAttention::Auto => LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttention::Disabled => LLAMA_FLASH_ATTN_TYPE_DISABLED,
            FlashAttention::Enabled => LLAMA_FLASH_ATTN_TYPE_ENABLED,
        };
        raw.rope_scaling_type = match self.rope_scaling {
            RopeScaling::Unspecified => LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED,
            RopeScaling::None => LLAMA_ROPE_SCALING_TYPE_NONE,
            RopeScaling::Linear => LLAMA_ROPE_SCALING_TYPE_LINEAR,
            RopeScaling::Yarn => LLAMA_ROPE_SCALING_TYPE_YARN,
            RopeScaling::LongRope => LLAMA_ROPE_SCALING_TYPE_LONGROPE,
        };
        raw.type_k = self.type_k.raw();
        raw.type_v = self.type_v.raw();
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::ContextParams;

    #[test]
    #[cfg_attr(miri, ignore = "calls llama.cpp, which Miri cannot run")]
    fn the_defaults_are_llama_cpps() {
        // SAFETY: returns a plain struct by value.
        let c = unsafe { llama_sys::llama_context_default_params() };
        let raw = ContextParams::default().raw().unwrap();
        assert_eq!(
            (raw.pooling_type, raw.attention_type, raw.flash_attn_type, raw.rope_scaling_type, raw.type_k, raw.type_v),
            (c.pooling_type, c.attention_type, c.flash_attn_type, c.rope_scaling_type, c.type_k, c.type_v)
        );
        assert_eq!(
            (raw.n_ctx, raw.n_batch, raw.n_ubatch, raw.n_seq_max),
            (c.n_ctx, c.n_batch, c.n_ubatch, c.n_seq_max)
        );
    }
}
