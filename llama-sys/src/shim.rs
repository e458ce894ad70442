// Hand-written declarations for shim/shim.cpp: exception-safe wrappers around llama.cpp
// functions that can throw. Each returns an error code (non-zero) or null instead of unwinding.

use crate::{llama_model, llama_sampler, llama_token, llama_token_data_array, llama_vocab};
use core::ffi::c_char;

extern "C" {
    /// `llama_sampler_accept`; -1 if it threw (e.g. a grammar rejecting the token).
    pub fn llama_rs_sampler_accept(smpl: *mut llama_sampler, token: llama_token) -> i32;
    /// `llama_sampler_apply`; -1 if it threw.
    pub fn llama_rs_sampler_apply(smpl: *mut llama_sampler, cur_p: *mut llama_token_data_array) -> i32;
    /// `llama_sampler_reset`; -1 if it threw.
    pub fn llama_rs_sampler_reset(smpl: *mut llama_sampler) -> i32;
    /// `llama_sampler_clone`; null if it threw.
    pub fn llama_rs_sampler_clone(smpl: *const llama_sampler) -> *mut llama_sampler;
    /// `llama_sampler_init_grammar`; null on a parse error or if it threw.
    pub fn llama_rs_sampler_init_grammar(
        vocab: *const llama_vocab,
        grammar_str: *const c_char,
        grammar_root: *const c_char,
    ) -> *mut llama_sampler;
    /// `llama_sampler_init_grammar_lazy_patterns`; null on a parse error or if it threw.
    pub fn llama_rs_sampler_init_grammar_lazy_patterns(
        vocab: *const llama_vocab,
        grammar_str: *const c_char,
        grammar_root: *const c_char,
        trigger_patterns: *mut *const c_char,
        num_trigger_patterns: usize,
        trigger_tokens: *const llama_token,
        num_trigger_tokens: usize,
    ) -> *mut llama_sampler;
    /// `llama_sampler_init_dry`; null if it threw.
    pub fn llama_rs_sampler_init_dry(
        vocab: *const llama_vocab,
        multiplier: f32,
        base: f32,
        allowed_length: i32,
        penalty_last_n: i32,
        seq_breakers: *mut *const c_char,
        num_breakers: usize,
    ) -> *mut llama_sampler;
    /// `llama_model_save_to_file`; -1 if it threw.
    pub fn llama_rs_model_save_to_file(model: *const llama_model, path: *const c_char) -> i32;
}
