/* Reference greedy decode loop written against llama.h directly, compiled by the root build
 * script against the same llama.cpp build the Rust crates link. The Rust side
 * (benches/greedy_loop.rs) runs the identical loop through the safe API; tests compare their
 * tokens and benches/compare_c.py compares their speed. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llama.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

/* Tokenizes `text`; returns a malloc'ed array and its length in *n, or NULL. */
static llama_token * tokenize(const struct llama_vocab * vocab, const char * text, bool add_special, int32_t * n) {
    int32_t len = (int32_t) strlen(text);
    int32_t cap = len + 2;
    llama_token * toks = malloc(sizeof(llama_token) * (size_t) cap);
    if (!toks) return NULL;
    *n = llama_tokenize(vocab, text, len, toks, cap, add_special, false);
    if (*n < 0) { free(toks); return NULL; }
    return toks;
}

/* Prompt = tokenize(text, add_special) followed by tokenize(text, no special) repeated,
 * truncated to exactly n_prompt tokens. Returns 0 on success. */
int llama_rs_c_greedy(const char * model_path, const char * text, int32_t n_prompt, int32_t n_gen,
                      int32_t n_threads, int32_t * out_tokens, double * pp_tps, double * tg_tps) {
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model * model = llama_model_load_from_file(model_path, mp);
    if (!model) return 1;
    const struct llama_vocab * vocab = llama_model_get_vocab(model);

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) (n_prompt + n_gen + 16);
    cp.n_batch = (uint32_t) n_prompt;
    cp.n_ubatch = (uint32_t) n_prompt;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { llama_model_free(model); return 2; }

    int32_t n_first = 0, n_rest = 0;
    llama_token * first = tokenize(vocab, text, true, &n_first);
    llama_token * rest = tokenize(vocab, text, false, &n_rest);
    llama_token * prompt = malloc(sizeof(llama_token) * (size_t) n_prompt);
    int rc = 3;
    if (!first || !rest || !prompt || n_rest == 0) goto done;
    int32_t n = 0;
    for (int32_t i = 0; i < n_first && n < n_prompt; i++) prompt[n++] = first[i];
    while (n < n_prompt) {
        for (int32_t i = 0; i < n_rest && n < n_prompt; i++) prompt[n++] = rest[i];
    }

    struct llama_batch batch = llama_batch_init(n_prompt, 0, 1);
    for (int32_t i = 0; i < n_prompt; i++) {
        batch.token[i] = prompt[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = i == n_prompt - 1;
    }
    batch.n_tokens = n_prompt;

    struct llama_sampler * greedy = llama_sampler_init_greedy();
    double t0 = now_s();
    if (llama_decode(ctx, batch) != 0) { rc = 4; goto free_batch; }
    llama_synchronize(ctx);
    double t1 = now_s();
    for (int32_t i = 0; i < n_gen; i++) {
        llama_token t = llama_sampler_sample(greedy, ctx, -1);
        out_tokens[i] = t;
        batch.token[0] = t;
        batch.pos[0] = n_prompt + i;
        batch.n_seq_id[0] = 1;
        batch.seq_id[0][0] = 0;
        batch.logits[0] = 1;
        batch.n_tokens = 1;
        if (llama_decode(ctx, batch) != 0) { rc = 5; goto free_batch; }
    }
    llama_synchronize(ctx);
    double t2 = now_s();
    *pp_tps = n_prompt / (t1 - t0);
    *tg_tps = n_gen / (t2 - t1);
    rc = 0;

free_batch:
    llama_sampler_free(greedy);
    llama_batch_free(batch);
done:
    free(first);
    free(rest);
    free(prompt);
    llama_free(ctx);
    llama_model_free(model);
    return rc;
}
