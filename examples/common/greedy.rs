//! The benchmark greedy loop, twice: through the safe `llama` API and through llama.h directly
//! (`benches/c_reference/greedy.c`, compiled by the root build script against the same
//! llama.cpp build). Used by the equivalence test and by `benches/greedy_loop.rs`.

use std::ffi::CString;
use std::time::Instant;

use llama::{AddSpecial, Batch, ContextParams, Logits, Model, Output, Sampler, Token};

/// One run: the generated tokens and both speeds.
#[derive(Debug, Clone, PartialEq)]
pub struct GreedyRun {
    /// Generated token ids.
    pub tokens: Vec<i32>,
    /// Prompt processing, tokens per second.
    pub pp_tps: f64,
    /// Generation, tokens per second.
    pub tg_tps: f64,
}

/// The prompt both sides use: `text` with special tokens, then `text` repeated, cut to `n`.
pub fn build_prompt(model: &Model, text: &str, n: usize) -> Result<Vec<Token>, Box<dyn std::error::Error>> {
    let vocab = model.vocab();
    let mut prompt = vocab.tokenize(text, AddSpecial::Yes)?;
    let rest = vocab.tokenize(text, AddSpecial::No)?;
    if rest.is_empty() {
        return Err("empty prompt text".into());
    }
    while prompt.len() < n {
        prompt.extend_from_slice(&rest);
    }
    prompt.truncate(n);
    Ok(prompt)
}

/// The loop through the safe API: one batch for the prompt, then `n_gen` greedy steps.
pub fn rust_greedy(
    model: &Model,
    text: &str,
    n_prompt: usize,
    n_gen: usize,
    threads: usize,
) -> Result<GreedyRun, Box<dyn std::error::Error>> {
    let params =
        ContextParams::default().n_ctx(n_prompt + n_gen + 16).n_batch(n_prompt).n_ubatch(n_prompt).n_threads(threads);
    let mut ctx = model.context(params)?;
    let prompt = build_prompt(model, text, n_prompt)?;
    let mut batch = Batch::new(n_prompt, 1);
    batch.add_sequence(&prompt, 0, 0, Logits::Want)?;
    let mut greedy = Sampler::greedy();

    let t0 = Instant::now();
    ctx.decode(&batch)?;
    ctx.logits(Output::Last).ok_or("no logits")?; // synchronises, like llama_synchronize in C
    let t1 = Instant::now();
    let mut tokens = Vec::with_capacity(n_gen);
    for i in 0..n_gen {
        let t = greedy.sample(&ctx, Output::Last)?;
        tokens.push(t.0);
        batch.clear();
        batch.add(t, n_prompt + i, &[0], Logits::Want)?;
        ctx.decode(&batch)?;
    }
    ctx.logits(Output::Last).ok_or("no logits")?;
    let t2 = Instant::now();
    Ok(GreedyRun {
        tokens,
        pp_tps: n_prompt as f64 / (t1 - t0).as_secs_f64(),
        tg_tps: n_gen as f64 / (t2 - t1).as_secs_f64(),
    })
}

extern "C" {
    fn llama_rs_c_greedy(
        model_path: *const std::ffi::c_char,
        text: *const std::ffi::c_char,
        n_prompt: i32,
        n_gen: i32,
        n_threads: i32,
        out_tokens: *mut i32,
        pp_tps: *mut f64,
        tg_tps: *mut f64,
    ) -> i32;
}

/// The same loop in C.
pub fn c_greedy(
    model_path: &std::path::Path,
    text: &str,
    n_prompt: usize,
    n_gen: usize,
    threads: usize,
) -> Result<GreedyRun, Box<dyn std::error::Error>> {
    let path = CString::new(model_path.as_os_str().as_encoded_bytes())?;
    let text = CString::new(text)?;
    let mut tokens = vec![0i32; n_gen];
    let (mut pp, mut tg) = (0.0, 0.0);
    // SAFETY: both strings are NUL-terminated; `tokens` has room for `n_gen` ids, which is
    // all the C loop writes; the out-pointers are valid f64s. The C code catches nothing but
    // only calls llama.h functions that report errors by return value.
    let rc = unsafe {
        llama_rs_c_greedy(
            path.as_ptr(),
            text.as_ptr(),
            i32::try_from(n_prompt)?,
            i32::try_from(n_gen)?,
            i32::try_from(threads)?,
            tokens.as_mut_ptr(),
            &mut pp,
            &mut tg,
        )
    };
    if rc != 0 {
        return Err(format!("C reference failed with code {rc}").into());
    }
    Ok(GreedyRun { tokens, pp_tps: pp, tg_tps: tg })
}

extern "C" {
    fn llama_rs_c_speculative(
        target_path: *const std::ffi::c_char,
        draft_path: *const std::ffi::c_char,
        prompt: *const i32,
        n_prompt: i32,
        n_gen: i32,
        n_draft: i32,
        n_threads: i32,
        out_tokens: *mut i32,
        n_out: *mut i32,
        tg_tps: *mut f64,
        n_drafted: *mut i32,
        n_accepted: *mut i32,
    ) -> i32;
}

/// Result of the C speculative-decoding reference.
#[derive(Debug, Clone)]
pub struct SpecRun {
    /// Generated tokens.
    pub tokens: Vec<i32>,
    /// Generation tokens per second (prompt excluded).
    pub tg_tps: f64,
    /// Draft tokens proposed.
    pub drafted: usize,
    /// Draft tokens accepted.
    pub accepted: usize,
}

/// llama.cpp's `speculative-simple` loop (greedy, fixed draft length) reproduced in C over
/// llama.h: see `benches/c_reference/speculative.c`.
pub fn c_speculative(
    target: &std::path::Path,
    draft: &std::path::Path,
    prompt: &[i32],
    n_gen: usize,
    n_draft: usize,
    threads: usize,
) -> Result<SpecRun, Box<dyn std::error::Error>> {
    let target = CString::new(target.as_os_str().as_encoded_bytes())?;
    let draft = CString::new(draft.as_os_str().as_encoded_bytes())?;
    let mut tokens = vec![0i32; n_gen];
    let (mut n_out, mut tps, mut drafted, mut accepted) = (0i32, 0.0, 0i32, 0i32);
    // SAFETY: the paths are NUL-terminated; `prompt` is valid for its length; `tokens` has
    // room for `n_gen` ids, the most the C loop writes; the out-pointers are valid. The C code
    // only calls llama.h functions that report errors by return value.
    let rc = unsafe {
        llama_rs_c_speculative(
            target.as_ptr(),
            draft.as_ptr(),
            prompt.as_ptr(),
            i32::try_from(prompt.len())?,
            i32::try_from(n_gen)?,
            i32::try_from(n_draft)?,
            i32::try_from(threads)?,
            tokens.as_mut_ptr(),
            &mut n_out,
            &mut tps,
            &mut drafted,
            &mut accepted,
        )
    };
    if rc != 0 {
        return Err(format!("C speculative reference failed with code {rc}").into());
    }
    tokens.truncate(usize::try_from(n_out)?);
    Ok(SpecRun { tokens, tg_tps: tps, drafted: usize::try_from(drafted)?, accepted: usize::try_from(accepted)? })
}

/// Ten different prompt texts for the equivalence checks.
pub const PROMPTS: [&str; 10] = [
    "The history of the printing press begins in",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Dear hiring manager, I am writing to apply for",
    "Photosynthesis is the process by which plants",
    "Once upon a time in a small village by the sea,",
    "SELECT name, COUNT(*) FROM orders GROUP BY",
    "The three laws of thermodynamics state that",
    "Ingredients: 2 cups flour, 1 cup sugar, 3 eggs. Instructions:",
    "In Rust, ownership means that every value has",
    "Le petit prince demanda au renard pourquoi",
];
