//! Choosing the next token: a chain of llama.cpp samplers.

use std::ptr::NonNull;

use crate::error::SampleError;
use crate::{Context, Token};

/// A sampler chain: filters and transforms applied in order, ending in a selecting sampler
/// (greedy or a seeded random draw).
///
/// ```
/// use llama::Sampler;
/// // top-k 40, top-p 0.95, temperature 0.8, seeded draw
/// let sampler = Sampler::chain().top_k(40).top_p(0.95).temp(0.8).dist(42);
/// assert_eq!(sampler.len(), 4);
/// let greedy = Sampler::greedy();
/// ```
pub struct Sampler {
    ptr: NonNull<llama_sys::llama_sampler>,
}

// SAFETY: a sampler chain is plain heap state owned by this value (built-in samplers keep no
// thread-bound resources); llama.cpp does not share it, so it may move between threads. Not
// `Sync`: sampling mutates it.
unsafe impl Send for Sampler {}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").field("len", &self.len()).finish()
    }
}

impl Sampler {
    /// An empty chain; add samplers with the builder methods.
    pub fn chain() -> Sampler {
        // SAFETY: plain struct by value, then a fresh chain owned by the new `Sampler`.
        let ptr = unsafe {
            let mut params = llama_sys::llama_sampler_chain_default_params();
            params.no_perf = true;
            llama_sys::llama_sampler_chain_init(params)
        };
        match NonNull::new(ptr) {
            Some(ptr) => Sampler { ptr },
            None => std::alloc::handle_alloc_error(std::alloc::Layout::new::<usize>()),
        }
    }

    /// A chain that always picks the most likely token.
    pub fn greedy() -> Sampler {
        // SAFETY: llama_sampler_init_greedy takes no input.
        Sampler::chain().push(unsafe { llama_sys::llama_sampler_init_greedy() })
    }

    /// Adds an owned sampler to the chain (the chain takes ownership).
    fn push(self, s: *mut llama_sys::llama_sampler) -> Sampler {
        if s.is_null() {
            // Built-in constructors only return null on allocation failure.
            std::alloc::handle_alloc_error(std::alloc::Layout::new::<usize>());
        }
        // SAFETY: both pointers are valid; the chain takes ownership of `s`.
        unsafe { llama_sys::llama_sampler_chain_add(self.ptr.as_ptr(), s) };
        self
    }

    /// Keeps the `k` most likely tokens (`k <= 0` keeps all).
    pub fn top_k(self, k: i32) -> Sampler {
        // SAFETY: any k is accepted.
        self.push(unsafe { llama_sys::llama_sampler_init_top_k(k) })
    }

    /// Keeps the smallest set of tokens whose probabilities add up to `p` (nucleus sampling).
    pub fn top_p(self, p: f32) -> Sampler {
        // SAFETY: any p is accepted; values >= 1 disable the filter.
        self.push(unsafe { llama_sys::llama_sampler_init_top_p(p, 1) })
    }

    /// Drops tokens less likely than `p` times the most likely one.
    pub fn min_p(self, p: f32) -> Sampler {
        // SAFETY: any p is accepted; values <= 0 disable the filter.
        self.push(unsafe { llama_sys::llama_sampler_init_min_p(p, 1) })
    }

    /// Divides logits by `t` (`t <= 0` makes the draw greedy).
    pub fn temp(self, t: f32) -> Sampler {
        // SAFETY: any t is accepted.
        self.push(unsafe { llama_sys::llama_sampler_init_temp(t) })
    }

    /// Draws from the remaining distribution with a seeded generator.
    pub fn dist(self, seed: u32) -> Sampler {
        // SAFETY: any seed is accepted.
        self.push(unsafe { llama_sys::llama_sampler_init_dist(seed) })
    }

    /// Picks the most likely remaining token.
    pub fn greedy_pick(self) -> Sampler {
        // SAFETY: no input.
        self.push(unsafe { llama_sys::llama_sampler_init_greedy() })
    }

    /// Number of samplers in the chain.
    pub fn len(&self) -> usize {
        // SAFETY: the chain is alive.
        usize::try_from(unsafe { llama_sys::llama_sampler_chain_n(self.ptr.as_ptr()) }).unwrap_or(0)
    }

    /// Whether the chain is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples a token from output `idx` of the context's last decode (negative counts from the
    /// end) and records it in the chain's state (for penalties, grammars, ...).
    pub fn sample(&mut self, ctx: &Context, idx: i32) -> Result<Token, SampleError> {
        if self.is_empty() {
            return Err(SampleError::EmptyChain);
        }
        let i = ctx.output_index(idx).ok_or(SampleError::NoLogits(idx))?;
        // SAFETY: chain and context are alive; `i` is a batch index the last decode produced
        // logits for, so llama.cpp's lookup cannot fail. Only reads the context's outputs.
        let t = unsafe { llama_sys::llama_sampler_sample(self.ptr.as_ptr(), ctx.as_ptr(), i) };
        Ok(Token(t))
    }

    /// Clears the chain's state (e.g. penalty history) for a new generation.
    pub fn reset(&mut self) {
        // SAFETY: the chain is alive.
        unsafe { llama_sys::llama_sampler_reset(self.ptr.as_ptr()) }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: the chain is owned by this value and freed once; it frees its members.
        unsafe { llama_sys::llama_sampler_free(self.ptr.as_ptr()) }
    }
}
