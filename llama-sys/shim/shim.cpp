// Exception barrier: every llama.cpp function the safe crate calls that can throw a C++
// exception is wrapped here, so no exception ever unwinds into Rust (which aborts the process).
// A wrapper returns the value named in its declaration (src/shim.rs) when the call threw and
// records the exception's message for `llama_rs_take_exception`. Which functions are wrapped and
// why is tabled in the safe crate's `barrier` module. Built by build.rs with the `cc` crate.

#include "barrier.h"
#include "llama.h"

#include <climits>
#include <cmath>
#include <exception>
#include <regex>
#include <string>

namespace llama_rs {

// Per thread: a wrapper and the Rust code reading its result always run on the same thread.
thread_local std::string g_what;
thread_local bool        g_pending = false;

void record(const char * what) noexcept {
    try {
        g_what = what ? what : "";
    } catch (...) {
        g_what.clear();
    }
    g_pending = true;
}

}  // namespace llama_rs

using llama_rs::g_pending;
using llama_rs::g_what;

extern "C" {

const char * llama_rs_take_exception(void) noexcept {
    if (!g_pending) {
        return nullptr;
    }
    g_pending = false;
    return g_what.c_str();
}

// --- model, context, adapters -------------------------------------------------------------

struct llama_model * llama_rs_model_load_from_file(const char * path, struct llama_model_params params) noexcept {
    LLAMA_RS_BARRIER(nullptr, { return llama_model_load_from_file(path, params); })
}

int32_t llama_rs_model_save_to_file(const struct llama_model * model, const char * path) noexcept {
    LLAMA_RS_BARRIER(-1, {
        llama_model_save_to_file(model, path);
        return 0;
    })
}

struct llama_context * llama_rs_init_from_model(struct llama_model * model, struct llama_context_params params) noexcept {
    LLAMA_RS_BARRIER(nullptr, { return llama_init_from_model(model, params); })
}

uint32_t llama_rs_model_quantize(const char * fname_inp, const char * fname_out,
                                 const llama_model_quantize_params * params) noexcept {
    LLAMA_RS_BARRIER(UINT32_MAX, { return llama_model_quantize(fname_inp, fname_out, params); })
}

struct llama_adapter_lora * llama_rs_adapter_lora_init(struct llama_model * model, const char * path) noexcept {
    LLAMA_RS_BARRIER(nullptr, { return llama_adapter_lora_init(model, path); })
}

int32_t llama_rs_set_adapters_lora(struct llama_context * ctx, struct llama_adapter_lora ** adapters,
                                   size_t n_adapters, float * scales) noexcept {
    LLAMA_RS_BARRIER(INT32_MIN, { return llama_set_adapters_lora(ctx, adapters, n_adapters, scales); })
}

int32_t llama_rs_set_adapter_cvec(struct llama_context * ctx, const float * data, size_t len, int32_t n_embd,
                                  int32_t il_start, int32_t il_end) noexcept {
    LLAMA_RS_BARRIER(INT32_MIN, { return llama_set_adapter_cvec(ctx, data, len, n_embd, il_start, il_end); })
}

// --- decoding -----------------------------------------------------------------------------

int32_t llama_rs_decode(struct llama_context * ctx, struct llama_batch batch) noexcept {
    LLAMA_RS_BARRIER(INT32_MIN, { return llama_decode(ctx, batch); })
}

int32_t llama_rs_encode(struct llama_context * ctx, struct llama_batch batch) noexcept {
    LLAMA_RS_BARRIER(INT32_MIN, { return llama_encode(ctx, batch); })
}

// --- vocabulary and text ------------------------------------------------------------------

int32_t llama_rs_tokenize(const struct llama_vocab * vocab, const char * text, int32_t text_len,
                          llama_token * tokens, int32_t n_tokens_max, bool add_special, bool parse_special) noexcept {
    LLAMA_RS_BARRIER(INT32_MIN, {
        return llama_tokenize(vocab, text, text_len, tokens, n_tokens_max, add_special, parse_special);
    })
}

int32_t llama_rs_token_to_piece(const struct llama_vocab * vocab, llama_token token, char * buf, int32_t length,
                                int32_t lstrip, bool special) noexcept {
    LLAMA_RS_BARRIER(INT32_MIN, { return llama_token_to_piece(vocab, token, buf, length, lstrip, special); })
}

int32_t llama_rs_detokenize(const struct llama_vocab * vocab, const llama_token * tokens, int32_t n_tokens,
                            char * text, int32_t text_len_max, bool remove_special, bool unparse_special) noexcept {
    LLAMA_RS_BARRIER(INT32_MIN, {
        return llama_detokenize(vocab, tokens, n_tokens, text, text_len_max, remove_special, unparse_special);
    })
}

const char * llama_rs_vocab_get_text(const struct llama_vocab * vocab, llama_token token) noexcept {
    LLAMA_RS_BARRIER(nullptr, { return llama_vocab_get_text(vocab, token); })
}

float llama_rs_vocab_get_score(const struct llama_vocab * vocab, llama_token token) noexcept {
    LLAMA_RS_BARRIER(NAN, { return llama_vocab_get_score(vocab, token); })
}

int32_t llama_rs_vocab_get_attr(const struct llama_vocab * vocab, llama_token token) noexcept {
    LLAMA_RS_BARRIER(-1, { return (int32_t) llama_vocab_get_attr(vocab, token); })
}

int32_t llama_rs_chat_apply_template(const char * tmpl, const struct llama_chat_message * chat, size_t n_msg,
                                     bool add_ass, char * buf, int32_t length) noexcept {
    LLAMA_RS_BARRIER(INT32_MIN, { return llama_chat_apply_template(tmpl, chat, n_msg, add_ass, buf, length); })
}

// --- state --------------------------------------------------------------------------------

size_t llama_rs_state_get_size(struct llama_context * ctx) noexcept {
    LLAMA_RS_BARRIER(0, { return llama_state_get_size(ctx); })
}

size_t llama_rs_state_get_data(struct llama_context * ctx, uint8_t * dst, size_t size) noexcept {
    LLAMA_RS_BARRIER(0, { return llama_state_get_data(ctx, dst, size); })
}

size_t llama_rs_state_set_data(struct llama_context * ctx, const uint8_t * src, size_t size) noexcept {
    LLAMA_RS_BARRIER(0, { return llama_state_set_data(ctx, src, size); })
}

bool llama_rs_state_save_file(struct llama_context * ctx, const char * path, const llama_token * tokens,
                              size_t n_token_count) noexcept {
    LLAMA_RS_BARRIER(false, { return llama_state_save_file(ctx, path, tokens, n_token_count); })
}

bool llama_rs_state_load_file(struct llama_context * ctx, const char * path, llama_token * tokens_out,
                              size_t n_token_capacity, size_t * n_token_count_out) noexcept {
    LLAMA_RS_BARRIER(false, {
        return llama_state_load_file(ctx, path, tokens_out, n_token_capacity, n_token_count_out);
    })
}

size_t llama_rs_state_seq_get_size(struct llama_context * ctx, llama_seq_id seq_id) noexcept {
    LLAMA_RS_BARRIER(0, { return llama_state_seq_get_size(ctx, seq_id); })
}

size_t llama_rs_state_seq_get_data(struct llama_context * ctx, uint8_t * dst, size_t size,
                                   llama_seq_id seq_id) noexcept {
    LLAMA_RS_BARRIER(0, { return llama_state_seq_get_data(ctx, dst, size, seq_id); })
}

size_t llama_rs_state_seq_set_data(struct llama_context * ctx, const uint8_t * src, size_t size,
                                   llama_seq_id dest_seq_id) noexcept {
    LLAMA_RS_BARRIER(0, { return llama_state_seq_set_data(ctx, src, size, dest_seq_id); })
}

size_t llama_rs_state_seq_save_file(struct llama_context * ctx, const char * path, llama_seq_id seq_id,
                                    const llama_token * tokens, size_t n_token_count) noexcept {
    LLAMA_RS_BARRIER(0, { return llama_state_seq_save_file(ctx, path, seq_id, tokens, n_token_count); })
}

size_t llama_rs_state_seq_load_file(struct llama_context * ctx, const char * path, llama_seq_id dest_seq_id,
                                    llama_token * tokens_out, size_t n_token_capacity,
                                    size_t * n_token_count_out) noexcept {
    LLAMA_RS_BARRIER(0, {
        return llama_state_seq_load_file(ctx, path, dest_seq_id, tokens_out, n_token_capacity, n_token_count_out);
    })
}

// --- samplers -----------------------------------------------------------------------------

int32_t llama_rs_sampler_accept(struct llama_sampler * smpl, llama_token token) noexcept {
    LLAMA_RS_BARRIER(-1, {
        llama_sampler_accept(smpl, token);
        return 0;
    })
}

int32_t llama_rs_sampler_apply(struct llama_sampler * smpl, llama_token_data_array * cur_p) noexcept {
    LLAMA_RS_BARRIER(-1, {
        llama_sampler_apply(smpl, cur_p);
        return 0;
    })
}

int32_t llama_rs_sampler_reset(struct llama_sampler * smpl) noexcept {
    LLAMA_RS_BARRIER(-1, {
        llama_sampler_reset(smpl);
        return 0;
    })
}

struct llama_sampler * llama_rs_sampler_clone(const struct llama_sampler * smpl) noexcept {
    LLAMA_RS_BARRIER(nullptr, { return llama_sampler_clone(smpl); })
}

int32_t llama_rs_sampler_chain_add(struct llama_sampler * chain, struct llama_sampler * smpl) noexcept {
    LLAMA_RS_BARRIER(-1, {
        llama_sampler_chain_add(chain, smpl);
        return 0;
    })
}

struct llama_sampler * llama_rs_sampler_init_penalties(int32_t n_vocab, int32_t penalty_last_n,
                                                       float penalty_repeat, float penalty_freq,
                                                       float penalty_present) noexcept {
    LLAMA_RS_BARRIER(nullptr, {
        return llama_sampler_init_penalties(n_vocab, penalty_last_n, penalty_repeat, penalty_freq, penalty_present);
    })
}

struct llama_sampler * llama_rs_sampler_init_logit_bias(int32_t n_vocab, int32_t n_logit_bias,
                                                        const llama_logit_bias * logit_bias) noexcept {
    LLAMA_RS_BARRIER(nullptr, { return llama_sampler_init_logit_bias(n_vocab, n_logit_bias, logit_bias); })
}

struct llama_sampler * llama_rs_sampler_init_infill(const struct llama_vocab * vocab) noexcept {
    LLAMA_RS_BARRIER(nullptr, { return llama_sampler_init_infill(vocab); })
}

struct llama_sampler * llama_rs_sampler_init_grammar(const struct llama_vocab * vocab, const char * grammar_str,
                                                     const char * grammar_root) noexcept {
    LLAMA_RS_BARRIER(nullptr, { return llama_sampler_init_grammar(vocab, grammar_str, grammar_root); })
}

struct llama_sampler * llama_rs_sampler_init_grammar_lazy_patterns(
        const struct llama_vocab * vocab, const char * grammar_str, const char * grammar_root,
        const char ** trigger_patterns, size_t num_trigger_patterns, const llama_token * trigger_tokens,
        size_t num_trigger_tokens) noexcept {
    LLAMA_RS_BARRIER(nullptr, {
        return llama_sampler_init_grammar_lazy_patterns(vocab, grammar_str, grammar_root, trigger_patterns,
                                                        num_trigger_patterns, trigger_tokens, num_trigger_tokens);
    })
}

struct llama_sampler * llama_rs_sampler_init_dry(const struct llama_vocab * vocab, float multiplier, float base,
                                                 int32_t allowed_length, int32_t penalty_last_n,
                                                 const char ** seq_breakers, size_t num_breakers) noexcept {
    LLAMA_RS_BARRIER(nullptr, {
        return llama_sampler_init_dry(vocab, multiplier, base, allowed_length, penalty_last_n, seq_breakers,
                                      num_breakers);
    })
}

// --- model loading options ---------------------------------------------------------------

// llama.cpp builds a std::regex from each tensor-override pattern inside the loader, where a
// syntax error would throw mid-load; this compiles it the same way beforehand. 1 if it
// compiles, 0 if it threw (the message is then pending).
int32_t llama_rs_regex_check(const char * pattern) noexcept {
    LLAMA_RS_BARRIER(0, {
        std::regex re(pattern);
        (void) re;
        return 1;
    })
}

// --- RPC ------------------------------------------------------------------------------------
// Reached through the RPC registry's proc addresses (the backend may be a loadable module), so
// the function comes in as a pointer with the signature `ggml-rpc.h` declares.

typedef ggml_backend_reg_t (*llama_rs_rpc_add_server_t)(const char * endpoint);
typedef void (*llama_rs_rpc_start_server_t)(const char * endpoint, const char * cache_dir, size_t n_threads,
                                            size_t n_devices, ggml_backend_dev_t * devices);

// `ggml_backend_rpc_add_server`; null if it threw.
ggml_backend_reg_t llama_rs_rpc_add_server(llama_rs_rpc_add_server_t add, const char * endpoint) noexcept {
    LLAMA_RS_BARRIER(nullptr, { return add(endpoint); })
}

// `ggml_backend_rpc_start_server` (returns only when serving stopped); 0 when it returned,
// -1 if it threw.
int32_t llama_rs_rpc_start_server(llama_rs_rpc_start_server_t start, const char * endpoint, const char * cache_dir,
                                  size_t n_threads, size_t n_devices, ggml_backend_dev_t * devices) noexcept {
    LLAMA_RS_BARRIER(-1, {
        start(endpoint, cache_dir, n_threads, n_devices, devices);
        return 0;
    })
}

}  // extern "C"
