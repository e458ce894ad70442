// Exception barrier for the multimodal library (`tools/mtmd`), built with the `mtmd` feature:
// wrappers for its calls that can throw (loading a projector, decoding and tokenizing media,
// encoding it and decoding the embeddings into a context). Same contract as shim.cpp: a wrapper
// returns the value named in src/shim.rs when the call threw.

#include "barrier.h"
#include "mtmd-helper.h"
#include "mtmd.h"

// Declarations only: the implementation is compiled into mtmd's helper (non-static symbols).
#include "stb/stb_image.h"

#include <climits>

extern "C" {

mtmd_context * llama_rs_mtmd_init_from_file(const char * path, const struct llama_model * model,
                                            struct mtmd_context_params params) noexcept {
    LLAMA_RS_BARRIER(nullptr, { return mtmd_init_from_file(path, model, params); })
}

// The size of an encoded image from its header alone, so a caller can refuse a decompression
// bomb before anything is allocated for its pixels. 1 when stb_image knows the format.
int32_t llama_rs_image_info(const unsigned char * buf, size_t len, int32_t * width, int32_t * height) noexcept {
    if (len > INT_MAX) {
        return 0;
    }
    int x = 0, y = 0, comp = 0;
    LLAMA_RS_BARRIER(0, {
        if (!stbi_info_from_memory(buf, (int) len, &x, &y, &comp)) {
            return 0;
        }
        *width  = x;
        *height = y;
        return 1;
    })
}

// An image (stb_image) or audio file (miniaudio, resampled to the projector's rate) decoded into
// a bitmap named by the SHA-256 of `buf`; null when undecodable (reason logged) or it threw.
mtmd_bitmap * llama_rs_mtmd_bitmap_from_buf(const mtmd_context * ctx, const unsigned char * buf, size_t len) noexcept {
    LLAMA_RS_BARRIER(nullptr, {
        return mtmd_helper_bitmap_init_from_buf(ctx, buf, len, false, mtmd_helper_init_opt_default()).bitmap;
    })
}

mtmd_bitmap * llama_rs_mtmd_bitmap_init(uint32_t nx, uint32_t ny, const unsigned char * data) noexcept {
    LLAMA_RS_BARRIER(nullptr, { return mtmd_bitmap_init(nx, ny, data); })
}

mtmd_bitmap * llama_rs_mtmd_bitmap_init_from_audio(size_t n_samples, const float * data) noexcept {
    LLAMA_RS_BARRIER(nullptr, { return mtmd_bitmap_init_from_audio(n_samples, data); })
}

int32_t llama_rs_mtmd_bitmap_set_id(mtmd_bitmap * bitmap, const char * id) noexcept {
    LLAMA_RS_BARRIER(INT32_MIN, {
        mtmd_bitmap_set_id(bitmap, id);
        return 0;
    })
}

int32_t llama_rs_mtmd_tokenize(const mtmd_context * ctx, mtmd_input_chunks * output, const mtmd_input_text * text,
                               const mtmd_bitmap * const * bitmaps, size_t n_bitmaps) noexcept {
    LLAMA_RS_BARRIER(INT32_MIN, { return mtmd_tokenize(ctx, output, text, bitmaps, n_bitmaps); })
}

int32_t llama_rs_mtmd_tokenize_from_parts(const mtmd_context * ctx, mtmd_input_chunks * output,
                                          const mtmd_input_part * const * parts, size_t n_parts,
                                          bool add_special) noexcept {
    LLAMA_RS_BARRIER(INT32_MIN, { return mtmd_tokenize_from_parts(ctx, output, parts, n_parts, add_special); })
}

// A media chunk through the projector, then its embeddings into `lctx` at `n_past` (the
// helper sets non-causal attention and M-RoPE positions where the model needs them).
int32_t llama_rs_mtmd_eval_media(mtmd_context * ctx, struct llama_context * lctx, const mtmd_input_chunk * chunk,
                                 llama_pos n_past, llama_seq_id seq_id, int32_t n_batch,
                                 llama_pos * new_n_past) noexcept {
    LLAMA_RS_BARRIER(INT32_MIN, {
        int32_t ret = mtmd_encode_chunk(ctx, chunk);
        if (ret != 0) {
            return ret;
        }
        float * embd = mtmd_get_output_embd(ctx);
        return mtmd_helper_decode_image_chunk(ctx, lctx, chunk, embd, n_past, seq_id, n_batch, new_n_past,
                                              nullptr, nullptr);
    })
}

}  // extern "C"
