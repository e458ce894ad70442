//! The C++ exception barrier, and what each llama.cpp entry point this crate calls can do.
//!
//! llama.cpp is C++ behind a C header. A C++ exception that unwinds into Rust aborts the process
//! ("Rust cannot catch foreign exceptions"), and a `GGML_ASSERT` aborts it in C. So every entry
//! point the crate calls falls in one of four classes, and each class has one defence:
//!
//! | class | entry points | defence |
//! |---|---|---|
//! | **throws on input** (parsers, `.at()` lookups, allocations sized by the caller) | tensor-override patterns (`std::regex`, compiled beforehand by `llama_rs_regex_check`), `ggml_backend_rpc_add_server`, `ggml_backend_rpc_start_server` (called through their registry proc addresses), `model_load_from_file`, `model_save_to_file`, `init_from_model`, `model_quantize`, `adapter_lora_init`, `set_adapters_lora`, `set_adapter_cvec`, `decode`, `encode`, `tokenize`, `token_to_piece`, `detokenize`, `vocab_get_text/score/attr`, `chat_apply_template`, `state_*` (whole, per sequence, files), `sampler_accept/apply/reset/clone`, `sampler_chain_add`, `sampler_init_grammar`, `_grammar_lazy_patterns`, `_dry`, `_penalties`, `_logit_bias`, `_infill`; with `mtmd`: `mtmd_init_from_file`, `mtmd_helper_bitmap_init_from_buf`, `mtmd_bitmap_init`, `_init_from_audio`, `_set_id`, `mtmd_tokenize`, `mtmd_encode_chunk` with `mtmd_helper_decode_image_chunk`, `stbi_info_from_memory` | called only through the `llama_rs_*` wrappers of `llama-sys/shim/shim.cpp`, which catch every exception and return a sentinel; [`take_exception`] turns the message into the error |
//! | **asserts on input** (`GGML_ASSERT`, out-of-bounds writes) | `memory_seq_rm/cp/keep/add/div`, `memory_seq_pos_min/max` (sequence ids, ranges), `batch_init`/`decode` (capacity, token and sequence ids), `vocab_is_control` and `token_to_piece` (unchecked indexing by token id), `get_logits_ith`/`get_embeddings_ith` (indices), `model_load_from_file` (hyper-parameters: `block_count`, ...); with `mtmd`: the audio preprocessors in `mtmd_tokenize` (clips shorter than two frames), `mtmd_helper_decode_image_chunk` (a non-causal medium larger than one micro-batch), `mtmd_bitmap_init` (a buffer shorter than `3 × nx × ny`), `mtmd_bitmap_init_from_audio` (more samples than a `u32`), `mtmd_encode_chunk` (chunks of another projector); a crafted projector can still assert in clip's loader and graphs: its tensor shapes are not checked against its hyper-parameters | validated in Rust before the call: `context::memory`, `Batch`, `Context::decode`'s checks, the GGUF validator in `model::gguf`, `media`'s checks of kinds, sizes, durations, batch room, owners, sequences and positions |
//! | **aborts on the network** (`GGML_ABORT` on any socket failure of ggml's RPC client) | `ggml_backend_rpc_add_server`, and every call that makes ggml talk to an RPC server: `model_load_from_file` with remote devices, `ggml_backend_dev_memory/get_props/buffer_type` of a remote device | the server is probed in Rust first (`rpc::ensure_reachable`: connect, HELLO, protocol version, device count, with timeouts); a server lost after the probe still aborts (documented in `rpc`) |
//! | **catches internally** (reports failure by return value) | `get_logits_ith`, `get_embeddings_ith`, `get_embeddings_seq` | called directly; the return value is checked |
//! | **cannot fail** (getters, setters of plain values, frees, defaults, fixed-size sampler constructors that only allocate a small object) | `n_ctx`, `n_batch`, `n_ubatch`, `n_seq_max`, `n_threads*`, `set_n_threads`, `set_embeddings`, `set_causal_attn`, `set_abort_callback`, `synchronize`, `get_memory`, `memory_clear`, `memory_can_shift`, `model_*` getters and metadata, `vocab_*` getters, `vocab_is_eog`, `*_default_params`, `*_free`, `sampler_init_greedy/dist/top_k/top_p/min_p/typical/temp/temp_ext/xtc/top_n_sigma/mirostat/mirostat_v2/adaptive_p`, `sampler_chain_init/get/n`, `sampler_name`, `sampler_get_seed`, `perf_*`, `backend_init`, `numa_init`, `log_set`, `print_system_info`, `chat_builtin_templates`, `ggml_backend_dev_*` of local devices, `ggml_backend_reg_*` (`reg_dev_get` only below `reg_dev_count`: on the bare RPC registry it aborts, and its count is 0), `ggml_backend_buft_*`, `ggml_backend_load_all_from_path`; with `mtmd`: `mtmd_*_params_default`, `mtmd_support_*`, `mtmd_get_*`, `mtmd_bitmap_get_*`/`_is_audio`, `mtmd_input_chunks_*` and `mtmd_input_chunk_get_*` getters, `mtmd_free`, `mtmd_bitmap_free`, `mtmd_helper_log_set` | called directly. They can still throw `std::bad_alloc` on exhausted memory, which this crate treats as Rust treats its own allocation failure |
//!
//! Each class has a test: `tests/barrier.rs` drives a throwing call through the wrapper, and the
//! validation tests (`tests/malformed.rs`, `tests/context.rs`, `tests/model.rs`) show each
//! asserting call refused before it reaches C.

use std::any::Any;
use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs a caller's callback where a panic must not unwind further (into C, or out of a
/// thread the crate owns); a panic becomes its message, which the error that reports it keeps.
pub(crate) fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(&*payload))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "(a panic without a message)".to_owned(),
    }
}

/// The message of the C++ exception the last `llama_rs_*` wrapper on this thread caught, if any;
/// clears it.
pub(crate) fn take_exception() -> Option<String> {
    // SAFETY: the shim returns null or a NUL-terminated thread-local string that stays valid
    // until the next exception on this thread; it is copied before anything else runs here.
    let p = unsafe { llama_sys::llama_rs_take_exception() };
    // SAFETY: non-null means a valid C string, as above.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// What llama.cpp threw during `call`, if it threw; otherwise `call`'s value. For wrappers whose
/// sentinel is also an ordinary return value (`i32::MIN`, 0, null), so the caller knows which.
pub(crate) fn guarded<T>(call: impl FnOnce() -> T) -> Result<T, String> {
    // A message left over from an earlier call on this thread must not be blamed on this one.
    let _ = take_exception();
    let value = call();
    match take_exception() {
        Some(what) => Err(what),
        None => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg_attr(miri, ignore = "calls llama.cpp, which Miri cannot run")]
    fn nothing_pending_means_no_exception() {
        assert_eq!(super::guarded(|| 7), Ok(7));
        assert_eq!(super::take_exception(), None);
    }
}
