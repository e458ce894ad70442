//! The exception barrier holds: llama.cpp calls that throw, made through their `llama_rs_*`
//! wrappers, return the documented sentinel and leave the message for
//! `llama_rs_take_exception`, instead of unwinding into Rust (which would abort this process).

#[path = "../../examples/common/models.rs"]
#[allow(dead_code)]
mod models;

use llama_sys::*;
use std::ffi::{CStr, CString};

fn take() -> Option<String> {
    // SAFETY: null or a NUL-terminated thread-local string, copied at once.
    unsafe {
        let p = llama_rs_take_exception();
        (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

#[test]
fn throwing_calls_return_their_sentinel_and_the_message() {
    let path = models::default_model().expect("fetch the default model");
    let path = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: plain FFI on a model loaded here and freed at the end; every pointer passed is
    // valid for the call. The out-of-range ids are the point: llama.cpp's `.at()` throws.
    unsafe {
        llama_backend_init();
        let mut params = llama_model_default_params();
        params.vocab_only = true;
        let model = llama_rs_model_load_from_file(path.as_ptr(), params);
        assert!(!model.is_null(), "the default model loads through the barrier: {:?}", take());
        assert_eq!(take(), None, "a call that did not throw leaves nothing pending");
        let vocab = llama_model_get_vocab(model);
        let bad = llama_vocab_n_tokens(vocab) + 7;

        assert!(llama_rs_vocab_get_text(vocab, bad).is_null());
        let what = take().expect("get_text threw");
        assert!(!what.is_empty());
        assert_eq!(take(), None, "taking the message clears it");

        assert!(llama_rs_vocab_get_score(vocab, bad).is_nan());
        assert!(take().is_some());
        assert_eq!(llama_rs_vocab_get_attr(vocab, bad), -1);
        assert!(take().is_some());

        let mut buf = [0 as std::ffi::c_char; 16];
        assert_eq!(llama_rs_token_to_piece(vocab, bad, buf.as_mut_ptr(), 16, 0, false), i32::MIN);
        assert!(take().is_some());
        let tokens = [bad];
        assert_eq!(llama_rs_detokenize(vocab, tokens.as_ptr(), 1, buf.as_mut_ptr(), 16, false, false), i32::MIN);
        assert!(take().is_some());

        // The same wrappers on good input behave like the functions they wrap.
        assert!(llama_rs_token_to_piece(vocab, 42, buf.as_mut_ptr(), 16, 0, false) > 0);
        assert_eq!(take(), None);

        // A message from another thread never leaks into this one.
        let addr = vocab as usize;
        std::thread::spawn(move || {
            let _ = llama_rs_vocab_get_text(addr as *const llama_vocab, bad);
        })
        .join()
        .unwrap();
        assert_eq!(take(), None);

        llama_model_free(model);
    }
}

#[test]
fn a_pattern_std_regex_refuses_is_reported_not_thrown() {
    let bad = CString::new("ffn_(up").unwrap();
    let good = CString::new(r"\.ffn_(up|down)_exps\.").unwrap();
    // SAFETY: NUL-terminated patterns; the wrapper catches what std::regex throws.
    unsafe {
        assert_eq!(llama_rs_regex_check(bad.as_ptr()), 0);
        assert!(take().is_some_and(|w| !w.is_empty()), "the regex error message is pending");
        assert_eq!(llama_rs_regex_check(good.as_ptr()), 1);
        assert_eq!(take(), None);
    }
}
