//! Drives `examples/chat.rs` through stdin: two turns (the second reuses the cached prefix),
//! `/reset`, and Ctrl-D (end of input) to quit.

use std::io::Write;
use std::process::{Command, Stdio};

fn example(name: &str) -> std::path::PathBuf {
    llama_examples::programs::example_path(name).unwrap()
}

#[test]
fn two_turns_reuse_the_prefix_then_reset_and_eof() {
    llama_examples::models::default_model().unwrap();
    let mut child = Command::new(example("chat"))
        .args(["--system", "You are a geography assistant. Answer in one short sentence.", "-n", "48"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"What is the capital of France?\nAnd the capital of Italy?\n/reset\nWhat is the capital of Spain?\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let turns: Vec<(usize, usize)> = stderr
        .lines()
        .filter_map(|l| {
            let l = &l[l.find("[prompt ")? + "[prompt ".len()..];
            let (total, rest) = l.split_once(" tokens, ")?;
            let decoded = rest.split_once(" decoded")?.0;
            Some((total.parse().ok()?, decoded.parse().ok()?))
        })
        .collect();
    assert_eq!(turns.len(), 3, "{stderr}");
    assert_eq!(turns[0].0, turns[0].1, "first turn decodes its whole prompt");
    assert!(turns[1].1 < turns[1].0 / 2, "second turn reuses the prefix: {:?}", turns[1]);
    assert_eq!(turns[2].0, turns[2].1, "after /reset nothing is reused");
    println!("turns (prompt tokens, decoded): {turns:?}");
    assert!(stdout.contains("Paris"), "{stdout}");
    assert!(stderr.contains("conversation cleared"));
}
