//! Drives `examples/generate.rs --untrusted`: a model whose loader would abort is refused by the
//! vetting child and the example exits with an error instead of crashing; the default model
//! passes vetting and generates.

use std::process::Command;

#[path = "../../llama/tests/common/gguf_file.rs"]
#[allow(dead_code)]
mod gguf_file;

fn example(name: &str) -> std::path::PathBuf {
    llama_examples::programs::example_path(name).unwrap()
}

#[test]
fn a_model_that_would_abort_the_loader_is_refused() {
    let mut g = gguf_file::Gguf::tiny_llama();
    g.set("llama.block_count", gguf_file::Value::U32(513));
    let dir = std::env::temp_dir().join(format!("llama-untrusted-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("block-count-513.gguf");
    std::fs::write(&path, g.bytes()).unwrap();

    let out = Command::new(example("generate")).arg("--untrusted").arg("--model").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("model refused") && stderr.contains("block_count"), "{stderr}");
}

#[test]
fn the_default_model_passes_vetting_and_generates() {
    llama_examples::models::default_model().unwrap();
    let out =
        Command::new(example("generate")).args(["--untrusted", "-n", "8", "--threads", "1", "Hello"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!out.stdout.is_empty(), "{stderr}");
}
