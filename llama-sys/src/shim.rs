// Hand-written declarations for shim/shim.cpp: exception-safe wrappers around llama.cpp
// functions that can throw. Each has the wrapped function's signature and returns the value
// noted below when the call threw; `llama_rs_take_exception` then returns the message.

use crate::*;
use core::ffi::c_char;

extern "C" {
    /// The message of the last exception a wrapper caught on this thread, or null if none is
    /// pending; taking it clears it. The pointer stays valid until the next exception on this
    /// thread: copy it at once.
    pub fn llama_rs_take_exception() -> *const c_char;

    /// `llama_model_load_from_file`; null if it threw.
    pub fn llama_rs_model_load_from_file(path: *const c_char, params: llama_model_params) -> *mut llama_model;
    /// `llama_model_save_to_file`; -1 if it threw.
    pub fn llama_rs_model_save_to_file(model: *const llama_model, path: *const c_char) -> i32;
    /// `llama_init_from_model`; null if it threw.
    pub fn llama_rs_init_from_model(model: *mut llama_model, params: llama_context_params) -> *mut llama_context;
    /// `llama_model_quantize`; `u32::MAX` if it threw.
    pub fn llama_rs_model_quantize(
        fname_inp: *const c_char,
        fname_out: *const c_char,
        params: *const llama_model_quantize_params,
    ) -> u32;
    /// `llama_adapter_lora_init`; null if it threw.
    pub fn llama_rs_adapter_lora_init(model: *mut llama_model, path: *const c_char) -> *mut llama_adapter_lora;
    /// `llama_set_adapters_lora`; `i32::MIN` if it threw.
    pub fn llama_rs_set_adapters_lora(
        ctx: *mut llama_context,
        adapters: *mut *mut llama_adapter_lora,
        n_adapters: usize,
        scales: *mut f32,
    ) -> i32;
    /// `llama_set_adapter_cvec`; `i32::MIN` if it threw.
    pub fn llama_rs_set_adapter_cvec(
        ctx: *mut llama_context,
        data: *const f32,
        len: usize,
        n_embd: i32,
        il_start: i32,
        il_end: i32,
    ) -> i32;

    /// `llama_decode`; `i32::MIN` if it threw.
    pub fn llama_rs_decode(ctx: *mut llama_context, batch: llama_batch) -> i32;
    /// `llama_encode`; `i32::MIN` if it threw.
    pub fn llama_rs_encode(ctx: *mut llama_context, batch: llama_batch) -> i32;

    /// `llama_tokenize`; `i32::MIN` if it threw (llama.cpp also returns it on overflow: check
    /// `llama_rs_take_exception`).
    pub fn llama_rs_tokenize(
        vocab: *const llama_vocab,
        text: *const c_char,
        text_len: i32,
        tokens: *mut llama_token,
        n_tokens_max: i32,
        add_special: bool,
        parse_special: bool,
    ) -> i32;
    /// `llama_token_to_piece`; `i32::MIN` if it threw.
    pub fn llama_rs_token_to_piece(
        vocab: *const llama_vocab,
        token: llama_token,
        buf: *mut c_char,
        length: i32,
        lstrip: i32,
        special: bool,
    ) -> i32;
    /// `llama_detokenize`; `i32::MIN` if it threw (or on overflow, as `llama_rs_tokenize`).
    pub fn llama_rs_detokenize(
        vocab: *const llama_vocab,
        tokens: *const llama_token,
        n_tokens: i32,
        text: *mut c_char,
        text_len_max: i32,
        remove_special: bool,
        unparse_special: bool,
    ) -> i32;
    /// `llama_vocab_get_text`; null if it threw.
    pub fn llama_rs_vocab_get_text(vocab: *const llama_vocab, token: llama_token) -> *const c_char;
    /// `llama_vocab_get_score`; NaN if it threw.
    pub fn llama_rs_vocab_get_score(vocab: *const llama_vocab, token: llama_token) -> f32;
    /// `llama_vocab_get_attr` as flags; -1 if it threw.
    pub fn llama_rs_vocab_get_attr(vocab: *const llama_vocab, token: llama_token) -> i32;
    /// `llama_chat_apply_template`; `i32::MIN` if it threw.
    pub fn llama_rs_chat_apply_template(
        tmpl: *const c_char,
        chat: *const llama_chat_message,
        n_msg: usize,
        add_ass: bool,
        buf: *mut c_char,
        length: i32,
    ) -> i32;

    /// `llama_state_get_size`; 0 if it threw.
    pub fn llama_rs_state_get_size(ctx: *mut llama_context) -> usize;
    /// `llama_state_get_data`; 0 if it threw.
    pub fn llama_rs_state_get_data(ctx: *mut llama_context, dst: *mut u8, size: usize) -> usize;
    /// `llama_state_set_data`; 0 if it threw.
    pub fn llama_rs_state_set_data(ctx: *mut llama_context, src: *const u8, size: usize) -> usize;
    /// `llama_state_save_file`; false if it threw.
    pub fn llama_rs_state_save_file(
        ctx: *mut llama_context,
        path: *const c_char,
        tokens: *const llama_token,
        n_token_count: usize,
    ) -> bool;
    /// `llama_state_load_file`; false if it threw.
    pub fn llama_rs_state_load_file(
        ctx: *mut llama_context,
        path: *const c_char,
        tokens_out: *mut llama_token,
        n_token_capacity: usize,
        n_token_count_out: *mut usize,
    ) -> bool;
    /// `llama_state_seq_get_size`; 0 if it threw.
    pub fn llama_rs_state_seq_get_size(ctx: *mut llama_context, seq_id: llama_seq_id) -> usize;
    /// `llama_state_seq_get_data`; 0 if it threw.
    pub fn llama_rs_state_seq_get_data(
        ctx: *mut llama_context,
        dst: *mut u8,
        size: usize,
        seq_id: llama_seq_id,
    ) -> usize;
    /// `llama_state_seq_set_data`; 0 if it threw.
    pub fn llama_rs_state_seq_set_data(
        ctx: *mut llama_context,
        src: *const u8,
        size: usize,
        dest_seq_id: llama_seq_id,
    ) -> usize;
    /// `llama_state_seq_save_file`; 0 if it threw.
    pub fn llama_rs_state_seq_save_file(
        ctx: *mut llama_context,
        path: *const c_char,
        seq_id: llama_seq_id,
        tokens: *const llama_token,
        n_token_count: usize,
    ) -> usize;
    /// `llama_state_seq_load_file`; 0 if it threw.
    pub fn llama_rs_state_seq_load_file(
        ctx: *mut llama_context,
        path: *const c_char,
        dest_seq_id: llama_seq_id,
        tokens_out: *mut llama_token,
        n_token_capacity: usize,
        n_token_count_out: *mut usize,
    ) -> usize;

    /// `llama_sampler_accept`; -1 if it threw (e.g. a grammar rejecting the token).
    pub fn llama_rs_sampler_accept(smpl: *mut llama_sampler, token: llama_token) -> i32;
    /// `llama_sampler_apply`; -1 if it threw.
    pub fn llama_rs_sampler_apply(smpl: *mut llama_sampler, cur_p: *mut llama_token_data_array) -> i32;
    /// `llama_sampler_reset`; -1 if it threw.
    pub fn llama_rs_sampler_reset(smpl: *mut llama_sampler) -> i32;
    /// `llama_sampler_clone`; null if it threw.
    pub fn llama_rs_sampler_clone(smpl: *const llama_sampler) -> *mut llama_sampler;
    /// `llama_sampler_chain_add`; -1 if it threw (the chain did not take `smpl` then).
    pub fn llama_rs_sampler_chain_add(chain: *mut llama_sampler, smpl: *mut llama_sampler) -> i32;
    /// `llama_sampler_init_penalties`; null if it threw.
    pub fn llama_rs_sampler_init_penalties(
        n_vocab: i32,
        penalty_last_n: i32,
        penalty_repeat: f32,
        penalty_freq: f32,
        penalty_present: f32,
    ) -> *mut llama_sampler;
    /// `llama_sampler_init_logit_bias`; null if it threw.
    pub fn llama_rs_sampler_init_logit_bias(
        n_vocab: i32,
        n_logit_bias: i32,
        logit_bias: *const llama_logit_bias,
    ) -> *mut llama_sampler;
    /// `llama_sampler_init_infill`; null if it threw.
    pub fn llama_rs_sampler_init_infill(vocab: *const llama_vocab) -> *mut llama_sampler;
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

    /// Compiles `pattern` as the `std::regex` llama.cpp builds from a tensor-override pattern:
    /// 1 if it compiles, 0 if it threw.
    pub fn llama_rs_regex_check(pattern: *const c_char) -> i32;

    /// Calls `add` (`ggml_backend_rpc_add_server`, from the RPC registry's proc address) with
    /// `endpoint`; null if it threw.
    pub fn llama_rs_rpc_add_server(add: llama_rs_rpc_add_server_t, endpoint: *const c_char) -> ggml_backend_reg_t;
    /// Calls `start` (`ggml_backend_rpc_start_server`, from the RPC registry's proc address),
    /// which serves until it fails; 0 when it returned, -1 if it threw.
    pub fn llama_rs_rpc_start_server(
        start: llama_rs_rpc_start_server_t,
        endpoint: *const c_char,
        cache_dir: *const c_char,
        n_threads: usize,
        n_devices: usize,
        devices: *mut ggml_backend_dev_t,
    ) -> i32;
}

/// `ggml_backend_rpc_add_server`'s signature (`ggml-rpc.h`).
pub type llama_rs_rpc_add_server_t = unsafe extern "C" fn(endpoint: *const c_char) -> ggml_backend_reg_t;
/// `ggml_backend_rpc_start_server`'s signature (`ggml-rpc.h`).
pub type llama_rs_rpc_start_server_t = unsafe extern "C" fn(
    endpoint: *const c_char,
    cache_dir: *const c_char,
    n_threads: usize,
    n_devices: usize,
    devices: *mut ggml_backend_dev_t,
);

/// A model's chat templates parsed by upstream's `common/` (opaque; `llama_rs_chat_templates_*`).
#[cfg(feature = "common")]
#[repr(C)]
pub struct llama_rs_chat_templates {
    _private: [u8; 0],
}

/// The output parser of one rendered chat request (opaque; `llama_rs_chat_parser_*`).
#[cfg(feature = "common")]
#[repr(C)]
pub struct llama_rs_chat_parser {
    _private: [u8; 0],
}

// Declarations for shim/chat.cpp (feature `common`): JSON strings in and out. Strings returned
// are heap copies to free with `llama_rs_string_free`; null means the call threw (message in
// `llama_rs_take_exception`).
#[cfg(feature = "common")]
extern "C" {
    /// Frees a string returned by a `llama_rs_chat_*` function (null is a no-op).
    pub fn llama_rs_string_free(s: *mut c_char);
    /// `common_chat_templates_init` for `model`, with `override_src` (nullable) replacing the
    /// model's template; null if it threw.
    pub fn llama_rs_chat_templates_init(
        model: *const llama_model,
        override_src: *const c_char,
    ) -> *mut llama_rs_chat_templates;
    /// Frees templates from `llama_rs_chat_templates_init` (null is a no-op).
    pub fn llama_rs_chat_templates_free(t: *mut llama_rs_chat_templates);
    /// `common_chat_templates_apply` on a JSON request; the rendered prompt, grammar, triggers,
    /// stops and parser as JSON; null if it threw.
    pub fn llama_rs_chat_templates_apply(t: *const llama_rs_chat_templates, request: *const c_char) -> *mut c_char;
    /// A parser from the JSON parser spec; null if it threw.
    pub fn llama_rs_chat_parser_init(spec: *const c_char) -> *mut llama_rs_chat_parser;
    /// Frees a parser from `llama_rs_chat_parser_init` (null is a no-op).
    pub fn llama_rs_chat_parser_free(p: *mut llama_rs_chat_parser);
    /// `common_chat_parse` of `len` bytes of model output: the assistant message as JSON; null
    /// if it threw.
    pub fn llama_rs_chat_parse(
        p: *const llama_rs_chat_parser,
        text: *const c_char,
        len: usize,
        is_partial: bool,
    ) -> *mut c_char;
}

// shim/mtmd.cpp (feature `mtmd`): the multimodal library's calls that can throw.
#[cfg(feature = "mtmd")]
extern "C" {
    /// `mtmd_init_from_file`; null if it failed (reason logged through mtmd's log) or threw.
    pub fn llama_rs_mtmd_init_from_file(
        path: *const c_char,
        model: *const llama_model,
        params: mtmd_context_params,
    ) -> *mut mtmd_context;
    /// An encoded image's width and height from its header (`stbi_info_from_memory`); 1 when the
    /// format is known, 0 otherwise or if it threw.
    pub fn llama_rs_image_info(buf: *const u8, len: usize, width: *mut i32, height: *mut i32) -> i32;
    /// `mtmd_helper_bitmap_init_from_buf` (not a placeholder, no video); null if undecodable or
    /// it threw.
    pub fn llama_rs_mtmd_bitmap_from_buf(ctx: *const mtmd_context, buf: *const u8, len: usize) -> *mut mtmd_bitmap;
    /// `mtmd_bitmap_init`; null if it threw.
    pub fn llama_rs_mtmd_bitmap_init(nx: u32, ny: u32, data: *const u8) -> *mut mtmd_bitmap;
    /// `mtmd_bitmap_init_from_audio`; null if it threw.
    pub fn llama_rs_mtmd_bitmap_init_from_audio(n_samples: usize, data: *const f32) -> *mut mtmd_bitmap;
    /// `mtmd_bitmap_set_id`; `i32::MIN` if it threw.
    pub fn llama_rs_mtmd_bitmap_set_id(bitmap: *mut mtmd_bitmap, id: *const c_char) -> i32;
    /// `mtmd_tokenize`; `i32::MIN` if it threw.
    pub fn llama_rs_mtmd_tokenize(
        ctx: *const mtmd_context,
        output: *mut mtmd_input_chunks,
        text: *const mtmd_input_text,
        bitmaps: *const *const mtmd_bitmap,
        n_bitmaps: usize,
    ) -> i32;
    /// `mtmd_tokenize_from_parts`; `i32::MIN` if it threw.
    pub fn llama_rs_mtmd_tokenize_from_parts(
        ctx: *const mtmd_context,
        output: *mut mtmd_input_chunks,
        parts: *const *const mtmd_input_part,
        n_parts: usize,
        add_special: bool,
    ) -> i32;
    /// `mtmd_encode_chunk` then `mtmd_helper_decode_image_chunk` of its embeddings; 0 on
    /// success, `i32::MIN` if it threw.
    pub fn llama_rs_mtmd_eval_media(
        ctx: *mut mtmd_context,
        lctx: *mut llama_context,
        chunk: *const mtmd_input_chunk,
        n_past: llama_pos,
        seq_id: llama_seq_id,
        n_batch: i32,
        new_n_past: *mut llama_pos,
    ) -> i32;
}
