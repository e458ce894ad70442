/* Reference for draft-model speculative decoding, written against llama.h directly and compiled
 * by the root build script against the same llama.cpp build the Rust crates link. It follows
 * the loop of llama.cpp's `speculative-simple` example with greedy sampling and a fixed draft
 * length (that example's `common` helpers are C++ and not part of the pinned package):
 *
 *   target cache holds the prompt minus its last token; `last` = the pending token
 *   repeat: the draft context keeps the longest prefix of its cache (which includes the tokens
 *           it drafted) that matches the accepted tokens + `last`, decodes the rest, then
 *           drafts n_draft tokens greedily, one decode each;
 *           the target decodes `last` + the draft in one batch, keeps the longest prefix of the
 *           draft that matches its own argmax, plus its next argmax as the new `last`;
 *           rejected positions are removed from the target cache.
 *
 * Generation speed is measured from after the prompt to the last token, as upstream does. */

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

static llama_token argmax(const float * row, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        if (row[i] > row[best]) best = i;
    }
    return best;
}

static void batch_set(struct llama_batch * b, int32_t i, llama_token t, llama_pos pos, bool logits) {
    b->token[i] = t;
    b->pos[i] = pos;
    b->n_seq_id[i] = 1;
    b->seq_id[i][0] = 0;
    b->logits[i] = logits;
}

static struct llama_context * make_ctx(struct llama_model * m, int32_t n_threads) {
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 4096;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    return llama_init_from_model(m, cp);
}

/* Returns 0 on success; writes up to n_gen tokens to out_tokens (count in *n_out). */
int llama_rs_c_speculative(const char * target_path, const char * draft_path, const llama_token * prompt,
                           int32_t n_prompt, int32_t n_gen, int32_t n_draft, int32_t n_threads,
                           llama_token * out_tokens, int32_t * n_out, double * tg_tps, int32_t * n_drafted,
                           int32_t * n_accepted) {
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model * tm = llama_model_load_from_file(target_path, mp);
    struct llama_model * dm = llama_model_load_from_file(draft_path, mp);
    struct llama_context * tgt = tm ? make_ctx(tm, n_threads) : NULL;
    struct llama_context * dft = dm ? make_ctx(dm, n_threads) : NULL;
    int32_t cap = n_prompt + n_gen + n_draft + 1;
    llama_token * hist = malloc(sizeof(llama_token) * (size_t) cap); /* accepted tokens before `last` */
    llama_token * draft = malloc(sizeof(llama_token) * (size_t) (n_draft + 1));
    llama_token * dcache = malloc(sizeof(llama_token) * (size_t) cap); /* the draft cache's tokens */
    struct llama_batch batch = llama_batch_init(cap, 0, 1);
    int rc = 1;
    if (!tgt || !dft || !hist || !draft || !dcache || n_prompt < 2) goto done;
    const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(tm));
    const struct llama_vocab * vocab = llama_model_get_vocab(tm);

    memcpy(hist, prompt, sizeof(llama_token) * (size_t) (n_prompt - 1));
    int32_t n_hist = n_prompt - 1, n_dcache = 0, n = 0;
    llama_token last = prompt[n_prompt - 1];
    batch.n_tokens = n_hist;
    for (int32_t i = 0; i < n_hist; i++) batch_set(&batch, i, hist[i], i, false);
    rc = 2;
    if (llama_decode(tgt, batch) != 0) goto done;
    llama_synchronize(tgt);
    *n_drafted = 0;
    *n_accepted = 0;
    double t0 = now_s();
    while (n < n_gen) {
        /* Draft: keep the cached prefix that matches hist + last (at least `last` is decoded,
         * for its logits), decode the rest, then n_draft greedy tokens. */
        hist[n_hist] = last;
        int32_t keep = 0;
        while (keep < n_dcache && keep < n_hist && dcache[keep] == hist[keep]) keep++;
        llama_memory_seq_rm(llama_get_memory(dft), 0, keep, -1);
        batch.n_tokens = 0;
        for (int32_t i = keep; i <= n_hist; i++) {
            batch_set(&batch, batch.n_tokens++, hist[i], i, i == n_hist);
            dcache[i] = hist[i];
        }
        if (llama_decode(dft, batch) != 0) goto done;
        n_dcache = n_hist + 1;
        for (int32_t i = 0; i < n_draft; i++) {
            draft[i] = argmax(llama_get_logits_ith(dft, -1), n_vocab);
            if (i + 1 == n_draft) break;
            batch.n_tokens = 1;
            batch_set(&batch, 0, draft[i], n_hist + 1 + i, true);
            if (llama_decode(dft, batch) != 0) goto done;
            dcache[n_dcache++] = draft[i];
        }
        /* Verify `last` + draft in one target batch. */
        batch.n_tokens = 0;
        batch_set(&batch, batch.n_tokens++, last, n_hist, true);
        for (int32_t i = 0; i < n_draft; i++) batch_set(&batch, batch.n_tokens++, draft[i], n_hist + 1 + i, true);
        if (llama_decode(tgt, batch) != 0) goto done;
        hist[n_hist++] = last;
        int32_t acc = 0;
        bool eog = false;
        for (int32_t i = 0; i <= n_draft && n < n_gen; i++) {
            llama_token t = argmax(llama_get_logits_ith(tgt, i), n_vocab);
            if (llama_vocab_is_eog(vocab, t)) { eog = true; break; }
            out_tokens[n++] = t;
            if (i < n_draft && t == draft[i]) {
                acc++;
                hist[n_hist++] = t;
                continue;
            }
            last = t;
            break;
        }
        *n_drafted += n_draft;
        *n_accepted += acc;
        /* Keep `last`'s predecessor and the accepted drafts; drop the rejected rest. */
        llama_memory_seq_rm(llama_get_memory(tgt), 0, n_hist, -1);
        if (eog) break;
    }
    llama_synchronize(tgt);
    *tg_tps = n / (now_s() - t0);
    *n_out = n;
    rc = 0;
done:
    llama_batch_free(batch);
    free(hist);
    free(draft);
    free(dcache);
    if (dft) llama_free(dft);
    if (tgt) llama_free(tgt);
    if (dm) llama_model_free(dm);
    if (tm) llama_model_free(tm);
    return rc;
}
