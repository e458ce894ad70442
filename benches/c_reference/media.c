/* Reference for images and audio, written against mtmd.h and mtmd-helper.h directly and compiled
 * by the root build script (feature `mtmd`) against the same llama.cpp build the Rust crates
 * link: a projector, one medium decoded from its file bytes, a prompt with the default marker,
 * mtmd's own chunk counts, mtmd's helper evaluating the chunks, then a greedy loop. The Rust
 * side (examples/common/media.rs) does the same through `llama::media`. */

#include <stdint.h>
#include <stdlib.h>

#include "llama.h"
#include "mtmd.h"
#include "mtmd-helper.h"

/* Writes n_gen greedy tokens to out_tokens and mtmd's counts of the tokenized prompt to
 * out_counts (chunks, tokens, positions). Returns 0 on success. */
int llama_rs_c_media_greedy(const char * model_path, const char * mmproj_path, const unsigned char * file,
                            size_t file_len, const char * prompt, int32_t n_ctx, int32_t n_batch, int32_t n_gen,
                            int32_t n_threads, int32_t * out_tokens, int64_t * out_counts) {
    llama_backend_init();
    struct llama_model * model = llama_model_load_from_file(model_path, llama_model_default_params());
    if (!model) return 1;
    int rc = 2;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) n_ctx;
    cp.n_batch = (uint32_t) n_batch;
    cp.n_ubatch = (uint32_t) n_batch;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    struct mtmd_context_params mp = mtmd_context_params_default();
    mp.use_gpu = true;
    mp.print_timings = false;
    mp.warmup = false;
    mp.n_threads = n_threads;
    mtmd_context * mctx = ctx ? mtmd_init_from_file(mmproj_path, model, mp) : NULL;
    mtmd_bitmap * bitmap = NULL;
    mtmd_input_chunks * chunks = NULL;
    struct llama_sampler * greedy = llama_sampler_init_greedy();
    if (!mctx) goto done;

    rc = 3;
    bitmap = mtmd_helper_bitmap_init_from_buf(mctx, file, file_len, false, mtmd_helper_init_opt_default()).bitmap;
    if (!bitmap) goto done;
    chunks = mtmd_input_chunks_init();
    struct mtmd_input_text text = { prompt, 0, true, true };
    while (prompt[text.text_len]) text.text_len++;
    const mtmd_bitmap * bitmaps[1] = { bitmap };
    rc = 4;
    if (mtmd_tokenize(mctx, chunks, &text, bitmaps, 1) != 0) goto done;
    out_counts[0] = (int64_t) mtmd_input_chunks_size(chunks);
    out_counts[1] = (int64_t) mtmd_helper_get_n_tokens(chunks);
    out_counts[2] = (int64_t) mtmd_helper_get_n_pos(chunks);

    rc = 5;
    llama_pos n_past = 0;
    if (mtmd_helper_eval_chunks(mctx, ctx, chunks, 0, 0, n_batch, true, &n_past) != 0) goto done;
    struct llama_batch batch = llama_batch_init(1, 0, 1);
    rc = 6;
    for (int32_t i = 0; i < n_gen; i++) {
        llama_token t = llama_sampler_sample(greedy, ctx, -1);
        out_tokens[i] = t;
        batch.token[0] = t;
        batch.pos[0] = n_past + i;
        batch.n_seq_id[0] = 1;
        batch.seq_id[0][0] = 0;
        batch.logits[0] = 1;
        batch.n_tokens = 1;
        if (llama_decode(ctx, batch) != 0) { llama_batch_free(batch); goto done; }
    }
    llama_batch_free(batch);
    rc = 0;

done:
    llama_sampler_free(greedy);
    if (chunks) mtmd_input_chunks_free(chunks);
    if (bitmap) mtmd_bitmap_free(bitmap);
    if (mctx) mtmd_free(mctx);
    if (ctx) llama_free(ctx);
    llama_model_free(model);
    return rc;
}
