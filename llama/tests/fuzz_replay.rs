//! Every fuzz target's committed seeds (and, locally, the corpus libFuzzer grew) run once
//! through the same target code as the fuzzer, in the ordinary test suite: CI replays them
//! without cargo fuzz or its instrumented build. `llama/fuzz/run.sh` does the fuzzing.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod llama_fuzz;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = 0;
    for dir in ["seeds", "corpus"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            run(&data);
            inputs += 1;
        }
    }
    assert!(inputs > 0, "no seeds for {target}");
    eprintln!("{target}: {inputs} inputs replayed");
}

#[test]
fn gguf() {
    replay("gguf", llama_fuzz::targets::gguf);
}

#[test]
fn tokenize() {
    replay("tokenize", llama_fuzz::targets::tokenize);
}

#[test]
fn grammar() {
    replay("grammar", llama_fuzz::targets::grammar);
}

#[cfg(feature = "json-schema")]
#[test]
fn json_schema() {
    replay("json_schema", llama_fuzz::targets::json_schema);
}

#[cfg(feature = "jinja")]
#[test]
fn chat_template() {
    replay("chat_template", llama_fuzz::targets::chat_template);
}

#[test]
fn state() {
    replay("state", llama_fuzz::targets::state);
}

#[cfg(feature = "mtmd")]
#[test]
fn media() {
    replay("media", llama_fuzz::targets::media);
}

#[test]
fn metadata() {
    replay("metadata", llama_fuzz::targets::metadata);
}

/// Request checking, samplers and tool rendering over the `server` target's seeds: none may
/// panic, and every seed gets as far as it was written to (a seed refused at the door would
/// fuzz only the refusal).
#[test]
#[cfg(feature = "server")]
fn server() {
    use llama_fuzz::server::{request, Reached};
    let model = llama_fuzz::vocab_model();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = 0;
    for dir in ["seeds", "corpus"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join("server")) else { continue };
        for entry in entries.flatten() {
            let reached = request(model, &std::fs::read(entry.path()).unwrap());
            inputs += 1;
            if dir == "seeds" {
                let name = entry.file_name().to_string_lossy().into_owned();
                let expected =
                    if name.starts_with("chat_tools") || name == "chat_tool_roundtrip" || name.ends_with("_tools") {
                        Reached::Rendered
                    } else if name.starts_with("embeddings") {
                        Reached::Checked
                    } else {
                        Reached::Sampled
                    };
                assert_eq!(reached, expected, "seed {name}");
            }
        }
    }
    assert!(inputs >= 18, "the server seeds are missing ({inputs} inputs)");
}
