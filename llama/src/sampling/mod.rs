//! Choosing the next token: chains of llama.cpp samplers and samplers written in Rust.

mod candidates;
mod config;
mod custom;
mod gbnf;

pub use candidates::{Candidates, TokenData, TokenDataArray};
pub use config::{AdaptiveP, Dry, Mirostat, MirostatV2, Penalties, TempExt, Xtc, MAX_PENALTY_WINDOW};
pub use custom::CustomSampler;

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::backend::capture_errors;
use crate::error::SampleError;
use crate::{Context, Model, Output, Token};

/// Why a sampler could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SamplerBuildError {
    /// The GBNF grammar did not parse (or uses an unsupported construct); carries
    /// llama.cpp's reason.
    #[error("invalid grammar: {0}")]
    Grammar(String),
    /// A parameter is out of range.
    #[error("invalid sampler parameter: {0}")]
    InvalidParam(&'static str),
    /// A token id is not in the vocabulary.
    #[error("token id {0} is outside the vocabulary")]
    InvalidToken(i32),
    /// A string contains a NUL byte.
    #[error("sampler text contains a NUL byte")]
    NulByte,
    /// The JSON Schema could not be converted to a grammar.
    #[cfg(feature = "json-schema")]
    #[error(transparent)]
    Schema(#[from] crate::SchemaError),
    /// A Rust sampler in the chain cannot be cloned.
    #[error("the chain holds a custom sampler that does not support cloning")]
    NotClonable,
}

/// Timing data of a chain (see [`Sampler::perf`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerPerf {
    /// Milliseconds spent in the chain.
    pub sample_ms: f64,
    /// Tokens sampled.
    pub n_sample: i32,
}

/// A sampler chain: filters and transforms applied in order, ending in a sampler that selects
/// (greedy, a seeded draw, mirostat, ...). Every llama.cpp sampler is one builder call away,
/// and [`custom`](Self::custom) adds samplers written in Rust.
///
/// ```
/// use llama::Sampler;
/// // repetition penalty, top-k 40, top-p 0.95, min-p 0.05, temperature 0.8, seeded draw
/// let sampler = Sampler::chain()
///     .penalties(llama::Penalties::default().repeat(1.1))
///     .top_k(40)
///     .top_p(0.95)
///     .min_p(0.05)
///     .temp(0.8)
///     .dist(42);
/// assert_eq!(sampler.len(), 6);
/// ```
pub struct Sampler {
    ptr: NonNull<llama_sys::llama_sampler>,
    /// The grammar, kept out of the chain so sampling can try the unconstrained choice first
    /// (see [`grammar_first`](Sampler::grammar_first)).
    grammar: Option<NonNull<llama_sys::llama_sampler>>,
    /// Tokens the grammar was walked past at creation (see `prefill_grammar`); `reset`
    /// walks it past them again.
    grammar_prefill: Vec<Token>,
    grammar_first: bool,
    /// Models whose vocabularies grammar, DRY and infill samplers point into.
    models: Vec<Model>,
    /// Where a Rust sampler in this chain that panicked leaves its message.
    panicked: custom::PanicSlot,
    /// Rust samplers that cannot be cloned.
    not_clonable: usize,
    /// Reused candidates buffer.
    cur: Vec<llama_sys::llama_token_data>,
}

// SAFETY: a chain is heap state owned by this value: built-in samplers keep no thread-bound
// resources, vocab-holding ones point into models kept alive by `models` (which are Sync), and
// Rust samplers are required to be `Send`. Not `Sync`: sampling mutates the chain.
unsafe impl Send for Sampler {}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").field("samplers", &self.names()).finish()
    }
}

impl Default for Sampler {
    /// llama.cpp's usual chain: top-k 40, top-p 0.95, min-p 0.05, temperature 0.8, seeded draw.
    fn default() -> Self {
        Sampler::chain().top_k(40).top_p(0.95).min_p(0.05).temp(0.8).dist(llama_sys::LLAMA_DEFAULT_SEED)
    }
}

fn must(p: *mut llama_sys::llama_sampler) -> NonNull<llama_sys::llama_sampler> {
    // Built-in constructors only return null on allocation failure.
    NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(std::alloc::Layout::new::<usize>()))
}

fn cstrings(items: &[&str]) -> Result<Vec<CString>, SamplerBuildError> {
    items.iter().map(|s| CString::new(*s).map_err(|_| SamplerBuildError::NulByte)).collect()
}

impl Sampler {
    /// An empty chain; add samplers with the builder methods.
    pub fn chain() -> Sampler {
        crate::backend::ensure_init();
        // SAFETY: plain struct by value, then a fresh chain owned by the new `Sampler`.
        let ptr = unsafe {
            let mut params = llama_sys::llama_sampler_chain_default_params();
            params.no_perf = false;
            llama_sys::llama_sampler_chain_init(params)
        };
        Sampler {
            ptr: must(ptr),
            grammar: None,
            grammar_prefill: Vec::new(),
            grammar_first: false,
            models: Vec::new(),
            panicked: custom::PanicSlot::default(),
            not_clonable: 0,
            cur: Vec::new(),
        }
    }

    /// A chain that always picks the most likely token.
    pub fn greedy() -> Sampler {
        Sampler::chain().greedy_pick()
    }

    /// Adds an owned sampler to the chain (the chain takes ownership).
    fn push(self, s: *mut llama_sys::llama_sampler) -> Sampler {
        let s = must(s);
        // SAFETY: both pointers are valid; the chain takes ownership of `s` when the call
        // returns 0.
        if unsafe { llama_sys::llama_rs_sampler_chain_add(self.ptr.as_ptr(), s.as_ptr()) } != 0 {
            // Only a failed allocation in the chain's vector can get here; Rust aborts on those too.
            std::alloc::handle_alloc_error(std::alloc::Layout::new::<usize>());
        }
        self
    }

    fn push_with_model(mut self, model: &Model, s: *mut llama_sys::llama_sampler) -> Sampler {
        if !self.models.iter().any(|m| Arc::ptr_eq(&m.handle, &model.handle)) {
            self.models.push(model.clone());
        }
        self.push(s)
    }

    /// Picks the most likely remaining token (ends a chain).
    pub fn greedy_pick(self) -> Sampler {
        // SAFETY: no input.
        self.push(unsafe { llama_sys::llama_sampler_init_greedy() })
    }

    /// Draws from the remaining distribution with a seeded generator (ends a chain).
    pub fn dist(self, seed: u32) -> Sampler {
        // SAFETY: any seed is accepted.
        self.push(unsafe { llama_sys::llama_sampler_init_dist(seed) })
    }

    /// Keeps the `k` most likely tokens (`k <= 0` keeps all).
    pub fn top_k(self, k: i32) -> Sampler {
        // SAFETY: any k is accepted.
        self.push(unsafe { llama_sys::llama_sampler_init_top_k(k) })
    }

    /// Keeps the smallest set of tokens whose probabilities add up to `p` (nucleus sampling).
    pub fn top_p(self, p: f32) -> Sampler {
        // SAFETY: any p is accepted; p >= 1 disables the filter.
        self.push(unsafe { llama_sys::llama_sampler_init_top_p(p, 1) })
    }

    /// Drops tokens less likely than `p` times the most likely one.
    pub fn min_p(self, p: f32) -> Sampler {
        // SAFETY: any p is accepted; p <= 0 disables the filter.
        self.push(unsafe { llama_sys::llama_sampler_init_min_p(p, 1) })
    }

    /// Locally typical sampling with mass `p`.
    pub fn typical(self, p: f32) -> Sampler {
        // SAFETY: any p is accepted; p >= 1 disables the filter.
        self.push(unsafe { llama_sys::llama_sampler_init_typical(p, 1) })
    }

    /// Divides logits by `t` (`t <= 0` keeps only the most likely token).
    pub fn temp(self, t: f32) -> Sampler {
        // SAFETY: any t is accepted.
        self.push(unsafe { llama_sys::llama_sampler_init_temp(t) })
    }

    /// Dynamic temperature, driven by the candidates' entropy (see [`TempExt`]).
    pub fn temp_ext(self, t: TempExt) -> Sampler {
        // SAFETY: any values are accepted.
        self.push(unsafe { llama_sys::llama_sampler_init_temp_ext(t.temp, t.delta, t.exponent) })
    }

    /// Exclude Top Choices (see [`Xtc`]).
    pub fn xtc(self, x: Xtc) -> Sampler {
        // SAFETY: any values are accepted.
        self.push(unsafe { llama_sys::llama_sampler_init_xtc(x.probability, x.threshold, 1, x.seed) })
    }

    /// Keeps tokens within `n` standard deviations of the top logit.
    pub fn top_n_sigma(self, n: f32) -> Sampler {
        // SAFETY: any n is accepted; n <= 0 disables the filter.
        self.push(unsafe { llama_sys::llama_sampler_init_top_n_sigma(n) })
    }

    /// Mirostat 1.0 (see [`Mirostat`]; ends a chain).
    pub fn mirostat(self, model: &Model, m: Mirostat) -> Sampler {
        let n_vocab = model.vocab().n_tokens();
        let estimate = i32::try_from(m.m).unwrap_or(i32::MAX).max(1);
        // SAFETY: n_vocab is the model's; other values are plain numbers.
        self.push(unsafe { llama_sys::llama_sampler_init_mirostat(n_vocab as i32, m.seed, m.tau, m.eta, estimate) })
    }

    /// Mirostat 2.0 (see [`MirostatV2`]; ends a chain).
    pub fn mirostat_v2(self, m: MirostatV2) -> Sampler {
        // SAFETY: plain numbers.
        self.push(unsafe { llama_sys::llama_sampler_init_mirostat_v2(m.seed, m.tau, m.eta) })
    }

    /// Adaptive-p (see [`AdaptiveP`]; ends a chain).
    pub fn adaptive_p(self, a: AdaptiveP) -> Sampler {
        // SAFETY: plain numbers; llama.cpp clamps them.
        self.push(unsafe { llama_sys::llama_sampler_init_adaptive_p(a.target, a.decay, a.seed) })
    }

    /// Repetition, frequency and presence penalties (see [`Penalties`]).
    pub fn penalties(self, p: Penalties) -> Sampler {
        let last_n = window(p.last_n);
        // SAFETY: plain numbers (the n_vocab argument is unused by llama.cpp).
        self.push(unsafe { llama_sys::llama_rs_sampler_init_penalties(0, last_n, p.repeat, p.frequency, p.presence) })
    }

    /// DRY ("don't repeat yourself") penalty for extending repeated sequences (see [`Dry`]).
    /// A breaker with a NUL byte is an error.
    ///
    /// ```no_run
    /// use llama::{Dry, Sampler};
    /// # let model = llama::Model::load("m.gguf")?;
    /// let chain = Sampler::chain().dry(&model, Dry::default().multiplier(0.8))?.dist(7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dry(self, model: &Model, dry: Dry) -> Result<Sampler, SamplerBuildError> {
        let breakers: Vec<&str> = dry.breakers.iter().map(String::as_str).collect();
        let owned = cstrings(&breakers)?;
        // llama.cpp sizes two zero-filled buffers by the window: i32::MAX would be 16 GiB.
        let last_n = window(dry.last_n);
        let allowed_length = i32::try_from(dry.allowed_length).unwrap_or(i32::MAX);
        let mut ptrs: Vec<*const std::ffi::c_char> = owned.iter().map(|s| s.as_ptr()).collect();
        // SAFETY: the vocab outlives the sampler (the chain keeps the model); the breaker
        // strings are NUL-terminated and only read during construction.
        let s = unsafe {
            llama_sys::llama_rs_sampler_init_dry(
                model.vocab().as_ptr(),
                dry.multiplier,
                dry.base,
                allowed_length,
                last_n,
                ptrs.as_mut_ptr(),
                ptrs.len(),
            )
        };
        if s.is_null() {
            return Err(SamplerBuildError::InvalidParam("llama.cpp rejected the DRY parameters"));
        }
        Ok(self.push_with_model(model, s))
    }

    /// Adds `bias` to the logits of the given tokens (use `f32::NEG_INFINITY` to ban one).
    pub fn logit_bias(self, model: &Model, biases: &[(Token, f32)]) -> Result<Sampler, SamplerBuildError> {
        let vocab = model.vocab();
        let n_vocab = vocab.n_tokens();
        let raw: Vec<llama_sys::llama_logit_bias> = biases
            .iter()
            .map(|&(t, bias)| {
                vocab.check(t).map_err(|_| SamplerBuildError::InvalidToken(t.0))?;
                Ok(llama_sys::llama_logit_bias { token: t.0, bias })
            })
            .collect::<Result<_, SamplerBuildError>>()?;
        let n = i32::try_from(raw.len()).map_err(|_| SamplerBuildError::InvalidParam("too many biases"))?;
        // SAFETY: every token is in range; llama.cpp copies the array.
        Ok(self.push(unsafe { llama_sys::llama_rs_sampler_init_logit_bias(n_vocab as i32, n, raw.as_ptr()) }))
    }

    /// Constrains output to a GBNF grammar starting at rule `root`. A grammar that does not
    /// parse is an error with llama.cpp's reason.
    ///
    /// ```no_run
    /// # let model = llama::Model::load("m.gguf")?;
    /// let yes_no = llama::Sampler::chain().grammar(&model, r#"root ::= "yes" | "no""#, "root")?.greedy_pick();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn grammar(self, model: &Model, gbnf: &str, root: &str) -> Result<Sampler, SamplerBuildError> {
        gbnf::check(gbnf)?;
        let (g, r) = (CString::new(gbnf), CString::new(root));
        let (g, r) = (g.map_err(|_| SamplerBuildError::NulByte)?, r.map_err(|_| SamplerBuildError::NulByte)?);
        // SAFETY: the vocab outlives the sampler (the chain keeps the model); strings are
        // NUL-terminated; the shim turns exceptions into null.
        let (s, reason) = capture_errors(|| unsafe {
            llama_sys::llama_rs_sampler_init_grammar(model.vocab().as_ptr(), g.as_ptr(), r.as_ptr())
        });
        if s.is_null() {
            return Err(SamplerBuildError::Grammar(if reason.is_empty() { "parse failed".into() } else { reason }));
        }
        self.set_grammar(model, s)
    }

    fn set_grammar(mut self, model: &Model, s: *mut llama_sys::llama_sampler) -> Result<Sampler, SamplerBuildError> {
        let s = must(s);
        if self.grammar.is_some() {
            // SAFETY: `s` was just created and is owned here.
            unsafe { llama_sys::llama_sampler_free(s.as_ptr()) };
            return Err(SamplerBuildError::InvalidParam("a chain holds at most one grammar"));
        }
        if !self.models.iter().any(|m| Arc::ptr_eq(&m.handle, &model.handle)) {
            self.models.push(model.clone());
        }
        self.grammar = Some(s);
        Ok(self)
    }

    /// Applies the grammar to the full candidate list before the rest of the chain on every
    /// token. Off by default: [`sample`](Self::sample) first lets the chain pick without the
    /// grammar and only when the grammar rejects that token re-runs with the grammar applied
    /// first — much faster on large vocabularies (llama.cpp's own default), at the price of a
    /// slightly different distribution than strict masking. Turn on for exact masking.
    pub fn grammar_first(mut self, yes: bool) -> Sampler {
        self.grammar_first = yes;
        self
    }

    /// Constrains output to any JSON object or array.
    #[cfg(feature = "json-schema")]
    pub fn json(self, model: &Model) -> Result<Sampler, SamplerBuildError> {
        self.grammar(model, &crate::json_grammar(), "root")
    }

    /// Constrains output to JSON valid against `schema` (see
    /// [`json_schema_to_grammar`](crate::json_schema_to_grammar) for the supported subset).
    ///
    /// ```no_run
    /// # let model = llama::Model::load("m.gguf")?;
    /// let schema = serde_json::json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]});
    /// let sampler = llama::Sampler::chain().json_schema(&model, &schema)?.dist(1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "json-schema")]
    pub fn json_schema(self, model: &Model, schema: &serde_json::Value) -> Result<Sampler, SamplerBuildError> {
        let gbnf = crate::json_schema_to_grammar(schema)?;
        self.grammar(model, &gbnf, "root")
    }

    /// A grammar that only starts constraining once the output matches one of
    /// `trigger_patterns` (regular expressions, matched from the start of the output; the
    /// grammar sees the text from the first match group) or one of `trigger_tokens` is sampled.
    pub fn grammar_lazy(
        self,
        model: &Model,
        gbnf: &str,
        root: &str,
        trigger_patterns: &[&str],
        trigger_tokens: &[Token],
    ) -> Result<Sampler, SamplerBuildError> {
        gbnf::check(gbnf)?;
        let (g, r) = (CString::new(gbnf), CString::new(root));
        let (g, r) = (g.map_err(|_| SamplerBuildError::NulByte)?, r.map_err(|_| SamplerBuildError::NulByte)?);
        let patterns = cstrings(trigger_patterns)?;
        let mut pattern_ptrs: Vec<*const std::ffi::c_char> = patterns.iter().map(|s| s.as_ptr()).collect();
        let vocab = model.vocab();
        for &t in trigger_tokens {
            vocab.check(t).map_err(|_| SamplerBuildError::InvalidToken(t.0))?;
        }
        // SAFETY: as in `grammar`; pattern strings and the token array are read during
        // construction only; tokens are in range; `Token` is transparent over llama_token.
        let (s, reason) = capture_errors(|| unsafe {
            llama_sys::llama_rs_sampler_init_grammar_lazy_patterns(
                vocab.as_ptr(),
                g.as_ptr(),
                r.as_ptr(),
                pattern_ptrs.as_mut_ptr(),
                pattern_ptrs.len(),
                trigger_tokens.as_ptr().cast(),
                trigger_tokens.len(),
            )
        });
        if s.is_null() {
            return Err(SamplerBuildError::Grammar(if reason.is_empty() { "parse failed".into() } else { reason }));
        }
        self.set_grammar(model, s)
    }

    /// Walks the grammar (only) past `tokens` that are already in the prompt, e.g. a reply prefix
    /// a tool-call grammar starts with. Other samplers' state (penalties) does not see them.
    pub(crate) fn prefill_grammar(&mut self, tokens: &[Token]) -> Result<(), SampleError> {
        self.grammar_prefill.extend_from_slice(tokens);
        self.walk_grammar(tokens)
    }

    fn walk_grammar(&self, tokens: &[Token]) -> Result<(), SampleError> {
        let Some(g) = self.grammar else { return Ok(()) };
        for &token in tokens {
            // SAFETY: the grammar is alive; the shim catches the exception a rejected token
            // raises.
            if unsafe { llama_sys::llama_rs_sampler_accept(g.as_ptr(), token.0) } != 0 {
                return Err(SampleError::Rejected);
            }
        }
        Ok(())
    }

    /// Fill-in-the-middle helper: merges tokens sharing a prefix and prefers end-of-generation
    /// when it dominates. Use after top-k/top-p.
    pub fn infill(self, model: &Model) -> Sampler {
        // SAFETY: the vocab outlives the sampler (the chain keeps the model).
        let s = unsafe { llama_sys::llama_rs_sampler_init_infill(model.vocab().as_ptr()) };
        self.push_with_model(model, s)
    }

    /// Adds a sampler written in Rust. A panic inside it becomes [`SampleError::CustomPanicked`]
    /// from [`sample`](Self::sample) or [`apply`](Self::apply), never an abort.
    pub fn custom(mut self, sampler: impl CustomSampler) -> Sampler {
        if sampler.clone_box().is_none() {
            self.not_clonable += 1;
        }
        let s = custom::into_raw(Box::new(sampler), self.panicked.clone());
        self.push(s)
    }

    /// Number of samplers in the chain (the grammar included).
    pub fn len(&self) -> usize {
        // SAFETY: the chain is alive.
        let n = usize::try_from(unsafe { llama_sys::llama_sampler_chain_n(self.ptr.as_ptr()) }).unwrap_or(0);
        n + usize::from(self.grammar.is_some())
    }

    /// Whether the chain is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Names of the samplers in the chain, in order (a grammar first).
    pub fn names(&self) -> Vec<String> {
        let grammar = self.grammar.map(|_| "grammar".to_string());
        // SAFETY: the chain is alive.
        let n = unsafe { llama_sys::llama_sampler_chain_n(self.ptr.as_ptr()) };
        grammar
            .into_iter()
            .chain((0..n).map(|i| {
                // SAFETY: `i` is below the chain length; names are static or owned by the sampler.
                unsafe {
                    let s = llama_sys::llama_sampler_chain_get(self.ptr.as_ptr(), i);
                    crate::backend::cstr_or_empty(llama_sys::llama_sampler_name(s))
                }
            }))
            .collect()
    }

    /// Samples a token from one output of the context's last decode ([`Output::Last`] after a
    /// prompt) and records it in the chain's state (for penalties, grammars, ...).
    pub fn sample(&mut self, ctx: &Context, at: Output) -> Result<Token, SampleError> {
        let logits = ctx.logits(at).ok_or(SampleError::NoLogits(at))?;
        if let (Some(grammar), false) = (self.grammar, self.grammar_first) {
            // Fast path: pick without the grammar, keep the pick if the grammar allows it.
            let token = self.pick(logits, false)?;
            let mut one = [llama_sys::llama_token_data { id: token.0, logit: 1.0, p: 0.0 }];
            let mut arr =
                llama_sys::llama_token_data_array { data: one.as_mut_ptr(), size: 1, selected: -1, sorted: false };
            // SAFETY: the grammar is alive and `arr` describes one valid entry; the shim catches
            // C++ exceptions.
            let rc = unsafe { llama_sys::llama_rs_sampler_apply(grammar.as_ptr(), &mut arr) };
            if rc == 0 && arr.size == 1 && one[0].logit.is_finite() {
                self.accept(token)?;
                return Ok(token);
            }
        }
        let token = self.pick(logits, true)?;
        self.accept(token)?;
        Ok(token)
    }

    /// Runs the chain (after the grammar if `with_grammar`) over `logits`; returns the
    /// selected token without accepting it.
    fn pick(&mut self, logits: &[f32], with_grammar: bool) -> Result<Token, SampleError> {
        self.cur.clear();
        self.cur.extend(logits.iter().enumerate().map(|(i, &logit)| llama_sys::llama_token_data {
            id: i as i32,
            logit,
            p: 0.0,
        }));
        let mut arr = llama_sys::llama_token_data_array {
            data: self.cur.as_mut_ptr(),
            size: self.cur.len(),
            selected: -1,
            sorted: false,
        };
        self.run(&mut arr, with_grammar)?;
        let selected = usize::try_from(arr.selected).ok().filter(|&s| s < arr.size).ok_or(SampleError::NoSelection)?;
        // SAFETY: samplers may repoint `data` at their own buffer, valid until the chain runs
        // again; `selected < size` was checked.
        let data = unsafe { *arr.data.add(selected) };
        if with_grammar && self.grammar.is_some() && !data.logit.is_finite() {
            // Everything was masked: the grammar has no continuation the chain could pick.
            return Err(SampleError::Rejected);
        }
        Ok(Token(data.id))
    }

    fn apply_raw(&mut self, arr: &mut llama_sys::llama_token_data_array) -> Result<(), SampleError> {
        self.run(arr, true)
    }

    fn run(&mut self, arr: &mut llama_sys::llama_token_data_array, with_grammar: bool) -> Result<(), SampleError> {
        if self.is_empty() {
            return Err(SampleError::EmptyChain);
        }
        self.panicked.take();
        if let (Some(g), true) = (self.grammar, with_grammar) {
            // SAFETY: the grammar is alive; `arr` describes `size` valid entries; the shim
            // catches C++ exceptions.
            if unsafe { llama_sys::llama_rs_sampler_apply(g.as_ptr(), arr) } != 0 {
                return Err(SampleError::Rejected);
            }
        }
        // SAFETY: the chain is alive; `arr` describes `size` valid entries; the shim catches
        // C++ exceptions and Rust samplers catch panics.
        let rc = unsafe { llama_sys::llama_rs_sampler_apply(self.ptr.as_ptr(), arr) };
        if let Some(message) = self.panicked.take() {
            return Err(SampleError::CustomPanicked(message));
        }
        if rc != 0 {
            return Err(SampleError::Rejected);
        }
        Ok(())
    }

    /// Runs the chain over a candidates array (e.g. one built with
    /// [`TokenDataArray::from_logits`]) without accepting anything.
    pub fn apply(&mut self, candidates: &mut TokenDataArray) -> Result<(), SampleError> {
        let mut arr = candidates.raw();
        let result = self.apply_raw(&mut arr);
        candidates.update_from(&arr);
        result
    }

    /// Records `token` as generated (updates penalties, grammar state, ...). A token the
    /// grammar does not allow is [`SampleError::Rejected`].
    pub fn accept(&mut self, token: Token) -> Result<(), SampleError> {
        self.panicked.take();
        if let Some(g) = self.grammar {
            // SAFETY: the grammar is alive; the shim catches the exception a rejected token
            // raises.
            if unsafe { llama_sys::llama_rs_sampler_accept(g.as_ptr(), token.0) } != 0 {
                return Err(SampleError::Rejected);
            }
        }
        // SAFETY: the chain is alive; the shim catches C++ exceptions (grammar rejections).
        let rc = unsafe { llama_sys::llama_rs_sampler_accept(self.ptr.as_ptr(), token.0) };
        if let Some(message) = self.panicked.take() {
            return Err(SampleError::CustomPanicked(message));
        }
        if rc != 0 {
            return Err(SampleError::Rejected);
        }
        Ok(())
    }

    /// Clears the chain's state (penalty history, grammar position, mirostat μ, RNG...). A
    /// grammar that starts inside the prompt (a tool-call grammar) goes back to where it
    /// started, past the prompt's part.
    pub fn reset(&mut self) {
        // SAFETY: the chain is alive; the shim catches exceptions (a failed reset leaves the
        // old state, which the next sample reports).
        unsafe { llama_sys::llama_rs_sampler_reset(self.ptr.as_ptr()) };
        if let Some(g) = self.grammar {
            // SAFETY: as above.
            unsafe { llama_sys::llama_rs_sampler_reset(g.as_ptr()) };
            // These tokens were accepted once at creation, so they are accepted again.
            let _ = self.walk_grammar(&self.grammar_prefill);
        }
        self.panicked.take();
    }

    /// A copy of the chain with its current state.
    pub fn try_clone(&self) -> Result<Sampler, SamplerBuildError> {
        if self.not_clonable > 0 {
            return Err(SamplerBuildError::NotClonable);
        }
        // SAFETY: the chain is alive; every member supports cloning (Rust samplers were checked
        // above); the shim catches exceptions.
        let p = unsafe { llama_sys::llama_rs_sampler_clone(self.ptr.as_ptr()) };
        let ptr = NonNull::new(p).ok_or(SamplerBuildError::NotClonable)?;
        // Rust samplers in the copy report panics to their own slot: re-point them.
        let panicked = custom::PanicSlot::default();
        // SAFETY: the copy is alive.
        for i in 0..unsafe { llama_sys::llama_sampler_chain_n(ptr.as_ptr()) } {
            // SAFETY: `i` is below the copy's length.
            let s = unsafe { llama_sys::llama_sampler_chain_get(ptr.as_ptr(), i) };
            custom::repoint_panic_slot(s, &panicked);
        }
        let grammar = match self.grammar {
            // SAFETY: the grammar is alive; the shim catches exceptions.
            Some(g) => match NonNull::new(unsafe { llama_sys::llama_rs_sampler_clone(g.as_ptr()) }) {
                Some(g) => Some(g),
                None => {
                    // SAFETY: the chain copy is owned here and not yet wrapped.
                    unsafe { llama_sys::llama_sampler_free(ptr.as_ptr()) };
                    return Err(SamplerBuildError::NotClonable);
                }
            },
            None => None,
        };
        Ok(Sampler {
            ptr,
            grammar,
            grammar_prefill: self.grammar_prefill.clone(),
            grammar_first: self.grammar_first,
            models: self.models.clone(),
            panicked,
            not_clonable: 0,
            cur: Vec::new(),
        })
    }

    /// Time spent and tokens sampled by this chain.
    pub fn perf(&self) -> SamplerPerf {
        // SAFETY: the chain is alive and is a chain (required by llama_perf_sampler).
        let d = unsafe { llama_sys::llama_perf_sampler(self.ptr.as_ptr()) };
        SamplerPerf { sample_ms: d.t_sample_ms, n_sample: d.n_sample }
    }

    /// The seed of the chain's random samplers (llama.cpp's default seed if none).
    pub fn seed(&self) -> u32 {
        // SAFETY: the chain is alive.
        unsafe { llama_sys::llama_sampler_get_seed(self.ptr.as_ptr()) }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: the chain and the grammar are owned by this value and freed once; the chain
        // frees its members (Rust samplers free their boxed state); both go before `models`
        // releases the vocabularies they point into.
        unsafe {
            llama_sys::llama_sampler_free(self.ptr.as_ptr());
            if let Some(g) = self.grammar {
                llama_sys::llama_sampler_free(g.as_ptr());
            }
        }
    }
}

/// A penalty window for llama.cpp, which allocates it whole: clamped to [`MAX_PENALTY_WINDOW`].
fn window(last_n: usize) -> i32 {
    last_n.min(MAX_PENALTY_WINDOW) as i32
}
