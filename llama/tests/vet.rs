//! Vetting models in a child process, the way an application does it: this test has its own
//! `main` (`harness = false`), which calls `llama::vet::child_main_if_requested` first, so the
//! test binary is also the vetting child.
//!
//! Shows that a file that aborts llama.cpp's C++ loader kills only the child (the parent gets
//! `VetError::Crashed` and carries on), that validation in the child refuses the same file
//! cleanly, that the real default model passes, and the timeout and "not wired" answers.

mod common;

use common::gguf_writer::{Gguf, Value};
use llama::{vet_model, vet_model_with, VetDepth, VetError, VetOptions};
use std::time::Duration;

/// Set for a child that should behave like an application that forgot the call.
const UNWIRED: &str = "LLAMA_VET_TEST_UNWIRED";

fn main() {
    if std::env::var_os(UNWIRED).is_none() {
        llama::vet::child_main_if_requested();
    } else {
        // An application's own main, run by mistake in the child: if it vets a model in turn,
        // that is refused rather than started again.
        let nested = vet_model("any.gguf");
        assert!(matches!(nested, Err(VetError::NotWired)), "{nested:?}");
        return;
    }
    let tests: [(&str, fn()); 5] = [
        ("a_child_that_does_not_answer_is_not_a_pass", a_child_that_does_not_answer_is_not_a_pass),
        ("a_loader_abort_kills_only_the_child", a_loader_abort_kills_only_the_child),
        ("validation_in_the_child_refuses_cleanly", validation_in_the_child_refuses_cleanly),
        ("the_default_model_passes", the_default_model_passes),
        ("a_slow_child_is_killed_at_the_timeout", a_slow_child_is_killed_at_the_timeout),
    ];
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let mut passed = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        test();
        println!("test {name} ... ok");
        passed += 1;
    }
    println!("{passed} passed, 0 failed");
}

/// A tiny llama whose `llama.block_count` (513) is beyond the layers llama.cpp can hold: its
/// loader fails a `GGML_ASSERT` and aborts the process.
fn block_count_513() -> std::path::PathBuf {
    let mut g = Gguf::tiny_llama();
    g.set("llama.block_count", Value::U32(513));
    let path = common::scratch("vet").join("block-count-513.gguf");
    std::fs::write(&path, g.bytes()).unwrap();
    path
}

fn a_child_that_does_not_answer_is_not_a_pass() {
    // The child inherits the variable; nothing else in this process reads it.
    std::env::set_var(UNWIRED, "1");
    let result = vet_model(block_count_513());
    std::env::remove_var(UNWIRED);
    assert!(matches!(result, Err(VetError::NotWired)), "{result:?}");
}

fn a_loader_abort_kills_only_the_child() {
    let path = block_count_513();
    let err = vet_model_with(&path, &VetOptions::default().validate(false)).unwrap_err();
    match &err {
        VetError::Crashed { status, stderr } => {
            assert!(status.contains("SIGABRT"), "{status}\n{stderr}");
            assert!(stderr.contains("GGML_ASSERT"), "{stderr}");
        }
        other => panic!("expected a crash, got {other:?}"),
    }
    println!("  {err}");
}

fn validation_in_the_child_refuses_cleanly() {
    let err = vet_model(block_count_513()).unwrap_err();
    match &err {
        VetError::Refused(reason) => assert!(reason.contains("block_count"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    println!("  {err}");
}

fn the_default_model_passes() {
    let path = common::models::default_model().unwrap();
    vet_model(&path).unwrap();
    vet_model_with(&path, &VetOptions::default().depth(VetDepth::Vocab)).unwrap();
    // Then it loads in-process as usual.
    llama::Model::load(&path).unwrap();
}

fn a_slow_child_is_killed_at_the_timeout() {
    let path = common::models::default_model().unwrap();
    let err = vet_model_with(&path, &VetOptions::default().timeout(Duration::from_millis(1))).unwrap_err();
    assert!(matches!(err, VetError::TimedOut(_)), "{err:?}");
}
