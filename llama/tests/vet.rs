//! Vetting models in a child process, the way an application does it: this test has its own
//! `main` (`harness = false`), which calls `llama::vet::child_main_if_requested` first, so the
//! test binary is also the vetting child.
//!
//! Shows that a file that aborts llama.cpp's C++ loader kills only the child (the parent gets
//! `VetError::Crashed` and carries on), that validation in the child refuses the same file
//! cleanly, that the real default model passes, and the timeout and "not wired" answers.

mod common;

use common::gguf_file::{Gguf, Value};
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
    let tests: [(&str, fn()); 7] = [
        ("a_child_that_does_not_answer_is_not_a_pass", a_child_that_does_not_answer_is_not_a_pass),
        ("a_loader_abort_kills_only_the_child", a_loader_abort_kills_only_the_child),
        ("validation_in_the_child_refuses_cleanly", validation_in_the_child_refuses_cleanly),
        ("the_default_model_passes", the_default_model_passes),
        ("a_slow_child_is_killed_at_the_timeout", a_slow_child_is_killed_at_the_timeout),
        ("kernel_asserts_kill_only_the_child", kernel_asserts_kill_only_the_child),
        ("real_models_with_one_value_changed", real_models_with_one_value_changed),
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

/// Values llama.cpp's loader accepts but the graph or ggml's CPU kernels assert on: without
/// validation the child dies at context creation or at the first decode (or hangs, for a rope
/// of zero dimensions), with the assert it hit on its stderr; with validation it is refused.
fn kernel_asserts_kill_only_the_child() {
    let dir = common::scratch("vet-kernels");
    // Each edit keeps the weights' shapes consistent with the values, so the loader accepts it.
    let reshape = |g: &mut Gguf, part: &str, dims: [u64; 2]| {
        for l in 0..2 {
            let t = g.tensor_mut(&format!("blk.{l}.{part}.weight"));
            t.dims = dims.to_vec();
            t.data = vec![0u8; (dims[0] * dims[1] * 4) as usize].into();
        }
    };
    // (name, the key at fault, the edit, what the child's stderr names)
    type Case<'a> = (&'a str, &'a str, &'a dyn Fn(&mut Gguf), &'a str);
    let cases: [Case; 3] = [
        (
            "eps-nan",
            "llama.attention.layer_norm_rms_epsilon",
            &|g| {
                g.set("llama.attention.layer_norm_rms_epsilon", Value::F32(f32::NAN));
            },
            "eps >= 0.0f",
        ),
        // 4 query heads of 2 for 3 key/value heads.
        (
            "kv-heads-not-a-divisor",
            "llama.attention.head_count_kv",
            &|g| {
                g.set("llama.attention.head_count", Value::U32(4))
                    .set("llama.attention.head_count_kv", Value::U32(3))
                    .set("llama.rope.dimension_count", Value::U32(2));
                reshape(g, "attn_k", [8, 6]);
                reshape(g, "attn_v", [8, 6]);
            },
            "ggml_can_mul_mat",
        ),
        // Values 2 wide, keys 4.
        (
            "value-heads-narrower",
            "llama.attention.value_length",
            &|g| {
                g.set("llama.attention.value_length", Value::U32(2));
                reshape(g, "attn_v", [8, 4]);
            },
            "GGML_ASSERT",
        ),
    ];
    let fast = VetOptions::default().timeout(Duration::from_secs(20));
    for (name, key, edit, assert) in cases {
        let mut g = Gguf::tiny_llama();
        edit(&mut g);
        let path = dir.join(format!("{name}.gguf"));
        std::fs::write(&path, g.bytes()).unwrap();
        match vet_model_with(&path, &fast.clone().validate(false)) {
            Err(VetError::Crashed { stderr, .. }) => assert!(stderr.contains(assert), "{name}: {stderr}"),
            Err(VetError::TimedOut(_)) => assert!(assert.is_empty(), "{name}: hung instead of asserting"),
            other => panic!("{name}: expected a crash or a hang without validation, got {other:?}"),
        }
        match vet_model_with(&path, &fast) {
            Err(VetError::Refused(reason)) => assert!(reason.contains(key), "{name}: {reason}"),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Real models with one metadata value changed, as an attacker would: the default model with a
/// NaN norm epsilon aborts the first decode, Gemma-3 with an odd rope dimension count aborts
/// and with none at all hangs the rope kernel (ops.cpp:6451). Validation refuses all three.
fn real_models_with_one_value_changed() {
    let smollm2 = common::models::default_model().unwrap();
    let gemma3 = common::models::ensure(&common::models::GEMMA3).unwrap();
    let cases = [
        (&smollm2, "llama.attention.layer_norm_rms_epsilon", Value::F32(f32::NAN), "eps >= 0.0f"),
        (&gemma3, "gemma3.rope.dimension_count", Value::U32(255), "n_dims % 2 == 0"),
        (&gemma3, "gemma3.rope.dimension_count", Value::U32(0), ""),
    ];
    let dir = common::scratch("vet-real");
    for (model, key, value, assert) in cases {
        let mut g = Gguf::parse(&std::fs::read(model).unwrap()).unwrap();
        g.set(key, value.clone());
        let path = dir.join("edited.gguf");
        g.write_to(&mut std::io::BufWriter::new(std::fs::File::create(&path).unwrap())).unwrap();
        let unchecked = VetOptions::default().validate(false).timeout(Duration::from_secs(15));
        match vet_model_with(&path, &unchecked) {
            Err(VetError::Crashed { stderr, .. }) => assert!(stderr.contains(assert), "{key} {value:?}: {stderr}"),
            Err(VetError::TimedOut(_)) => assert!(assert.is_empty(), "{key} {value:?}: hung instead of asserting"),
            other => panic!("{key} {value:?}: expected a crash or a hang without validation, got {other:?}"),
        }
        let err = llama::Model::load(&path).unwrap_err();
        assert!(err.to_string().contains(key), "{err}");
        println!("  {key} = {value:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
