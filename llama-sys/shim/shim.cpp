// Exception barrier: llama.cpp functions that can throw C++ exceptions, wrapped so no exception
// ever unwinds into Rust (which would abort the process). Each wrapper returns an error code or
// null instead. Built by build.rs with the `cc` crate; declared in src/shim.rs.

#include "llama.h"

extern "C" {

int32_t llama_rs_sampler_accept(struct llama_sampler * smpl, llama_token token) noexcept {
    try {
        llama_sampler_accept(smpl, token);
        return 0;
    } catch (...) {
        return -1;
    }
}

int32_t llama_rs_sampler_apply(struct llama_sampler * smpl, llama_token_data_array * cur_p) noexcept {
    try {
        llama_sampler_apply(smpl, cur_p);
        return 0;
    } catch (...) {
        return -1;
    }
}

int32_t llama_rs_sampler_reset(struct llama_sampler * smpl) noexcept {
    try {
        llama_sampler_reset(smpl);
        return 0;
    } catch (...) {
        return -1;
    }
}

struct llama_sampler * llama_rs_sampler_clone(const struct llama_sampler * smpl) noexcept {
    try {
        return llama_sampler_clone(smpl);
    } catch (...) {
        return nullptr;
    }
}

struct llama_sampler * llama_rs_sampler_init_grammar_lazy_patterns(
        const struct llama_vocab * vocab, const char * grammar_str, const char * grammar_root,
        const char ** trigger_patterns, size_t num_trigger_patterns,
        const llama_token * trigger_tokens, size_t num_trigger_tokens) noexcept {
    try {
        return llama_sampler_init_grammar_lazy_patterns(vocab, grammar_str, grammar_root, trigger_patterns,
                                                        num_trigger_patterns, trigger_tokens, num_trigger_tokens);
    } catch (...) {
        return nullptr;
    }
}

struct llama_sampler * llama_rs_sampler_init_grammar(
        const struct llama_vocab * vocab, const char * grammar_str, const char * grammar_root) noexcept {
    try {
        return llama_sampler_init_grammar(vocab, grammar_str, grammar_root);
    } catch (...) {
        return nullptr;
    }
}

struct llama_sampler * llama_rs_sampler_init_dry(
        const struct llama_vocab * vocab, float multiplier, float base, int32_t allowed_length,
        int32_t penalty_last_n, const char ** seq_breakers, size_t num_breakers) noexcept {
    try {
        return llama_sampler_init_dry(vocab, multiplier, base, allowed_length, penalty_last_n, seq_breakers,
                                      num_breakers);
    } catch (...) {
        return nullptr;
    }
}

int32_t llama_rs_model_save_to_file(const struct llama_model * model, const char * path) noexcept {
    try {
        llama_model_save_to_file(model, path);
        return 0;
    } catch (...) {
        return -1;
    }
}

}  // extern "C"
