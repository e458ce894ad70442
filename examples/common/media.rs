//! The image-and-audio greedy loop twice: through `llama::media` and through mtmd.h directly
//! (`benches/c_reference/media.c`, compiled by the root build script against the same build).
//! Used by the equivalence test.

use std::ffi::CString;
use std::path::Path;

use llama::media::Projector;
use llama::{AddSpecial, Batch, ContextParams, Logits, Model, Output, Sampler};

/// One run: the generated tokens and the tokenized prompt's (chunks, tokens, positions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRun {
    pub tokens: Vec<i32>,
    pub counts: (usize, usize, usize),
}

/// Context size and logical batch both sides use.
const N_CTX: usize = 1024;
const N_BATCH: usize = 512;

/// `prompt` (with the default marker `<__media__>` where the medium goes) and the medium's file
/// bytes through the safe API, then `n_gen` greedy tokens.
pub fn rust_media_greedy(
    model: &Model,
    mmproj: &Path,
    file: &[u8],
    prompt: &str,
    n_gen: usize,
    threads: usize,
) -> Result<MediaRun, Box<dyn std::error::Error>> {
    let projector = Projector::builder(mmproj).n_threads(threads).load(model)?;
    let media = projector.media_from_bytes(file)?;
    let chunks = projector.tokenize(prompt, &[&media], AddSpecial::Yes)?;
    let counts = (chunks.len(), chunks.n_tokens(), chunks.n_pos());
    let params = ContextParams::default().n_ctx(N_CTX).n_batch(N_BATCH).n_ubatch(N_BATCH).n_threads(threads);
    let mut ctx = model.context(params)?;
    let end = projector.eval(&mut ctx, &chunks, 0, 0)?;
    let mut greedy = Sampler::greedy();
    let mut batch = Batch::new(1, 1);
    let mut tokens = Vec::with_capacity(n_gen);
    for i in 0..n_gen {
        let t = greedy.sample(&ctx, Output::Last)?;
        tokens.push(t.0);
        batch.clear();
        batch.add(t, end + i, &[0], Logits::Want)?;
        ctx.decode(&batch)?;
    }
    Ok(MediaRun { tokens, counts })
}

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn llama_rs_c_media_greedy(
        model_path: *const std::ffi::c_char,
        mmproj_path: *const std::ffi::c_char,
        file: *const u8,
        file_len: usize,
        prompt: *const std::ffi::c_char,
        n_ctx: i32,
        n_batch: i32,
        n_gen: i32,
        n_threads: i32,
        out_tokens: *mut i32,
        out_counts: *mut i64,
    ) -> i32;
}

/// The same in C, on the model at `model_path`.
pub fn c_media_greedy(
    model_path: &Path,
    mmproj: &Path,
    file: &[u8],
    prompt: &str,
    n_gen: usize,
    threads: usize,
) -> Result<MediaRun, Box<dyn std::error::Error>> {
    let path = CString::new(model_path.as_os_str().as_encoded_bytes())?;
    let mmproj = CString::new(mmproj.as_os_str().as_encoded_bytes())?;
    let prompt = CString::new(prompt)?;
    let mut tokens = vec![0i32; n_gen];
    let mut counts = [0i64; 3];
    // SAFETY: the strings are NUL-terminated; `file` is valid for its length; `tokens` has room
    // for `n_gen` ids and `counts` for the three counts, all the C code writes. It calls only
    // functions that report errors by return value (mtmd's loader catches its exceptions).
    let rc = unsafe {
        llama_rs_c_media_greedy(
            path.as_ptr(),
            mmproj.as_ptr(),
            file.as_ptr(),
            file.len(),
            prompt.as_ptr(),
            i32::try_from(N_CTX)?,
            i32::try_from(N_BATCH)?,
            i32::try_from(n_gen)?,
            i32::try_from(threads)?,
            tokens.as_mut_ptr(),
            counts.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(format!("C reference failed with code {rc}").into());
    }
    let count = |i: usize| usize::try_from(counts[i]).unwrap_or(0);
    Ok(MediaRun { tokens, counts: (count(0), count(1), count(2)) })
}
