//! Drives `examples/deep_research` end to end on the default model with small limits:
//! in-process (the engine batches the sub-questions), against the server example over loopback
//! HTTP, and interrupted by Ctrl-C part-way (what was gathered is still written).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use llama_examples::programs::{example_path, ServerProcess};

/// One pipeline at a time: on a small machine, parallel runs only make each slower.
static SERIAL: Mutex<()> = Mutex::new(());

const TOPIC: &str = "Impact of local AI on cloud provider revenue";

/// Three questions researched at once, a small cache.
const SMALL: [&str; 8] = ["--max-questions", "3", "--parallel", "3", "--seed", "7", "--ctx", "4096"];

fn out_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("deep-research-{name}-{}.md", std::process::id()))
}

/// The whole pipeline with short answers and one follow-up round.
fn run(args: &[&str], out: &Path) -> Output {
    llama_examples::models::default_model().unwrap();
    let output = Command::new(example_path("deep_research").unwrap())
        .args(SMALL)
        .args(["--max-tokens", "40", "--rounds", "1"])
        .args(args)
        .arg("--out")
        .arg(out)
        .arg(TOPIC)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "deep_research failed ({}):\n{stderr}", output.status);
    println!("{stderr}");
    output
}

/// The number right after `prefix` in the line of `text` that holds it.
fn number_after(text: &str, prefix: &str) -> Option<usize> {
    let at = text.find(prefix)? + prefix.len();
    text[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Every section of the brief, the statistics flagged, the sub-questions in the appendix; and
/// the log shows every structured step parsed.
fn check_report(out: &Path, stderr: &str) -> String {
    let md = std::fs::read_to_string(out).unwrap();
    let _ = std::fs::remove_file(out);
    for section in [
        "\n## Summary\n",
        "\n## Key findings\n",
        "\n## Statistics\n",
        "\n## Chart suggestions\n",
        "\n## FAQ (drafts)\n",
    ] {
        assert!(md.contains(section), "{section:?} missing:\n{md}");
    }
    assert!(md.contains("Model-generated and unverified"), "statistics not flagged:\n{md}");
    let appendix = md.split("\n## Appendix: sub-questions\n").nth(1).unwrap_or_else(|| panic!("no appendix:\n{md}"));
    assert!(appendix.matches("\n### ").count() >= 3, "fewer than 3 sub-questions in the appendix:\n{md}");
    assert!(!md.contains("Interrupted") && !md.contains("Incomplete"), "{md}");
    assert!(stderr.contains("\nplan: 3 sub-questions\n"), "plan not parsed:\n{stderr}");
    assert!(stderr.contains("follow-ups 1: "), "follow-ups not parsed:\n{stderr}");
    assert!(stderr.contains("\nbrief: "), "brief not parsed:\n{stderr}");
    assert!(stderr.contains("\ntotal "), "no timings:\n{stderr}");
    md
}

#[test]
fn in_process_brief_has_every_section_and_batches_the_research() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = out_file("local");
    let output = run(&["--threads", "2"], &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    check_report(&out, &stderr);
    // Step 1 is one request, so anything above 1 after round 1 happened during step 2.
    let round1 = stderr.lines().find(|l| l.starts_with("research round 1: ") && l.contains("t/s")).unwrap();
    let batched = number_after(round1, "the engine decoded up to ").unwrap();
    assert!(batched > 1, "the sub-questions were not decoded together: {round1}");
}

#[test]
fn over_http_against_the_server_example() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    llama_examples::models::default_model().unwrap();
    // One decoding thread, as in the server's own loopback tests: on a shared machine a second
    // ggml thread waits at barriers for its descheduled partner (a plan took 200 s instead of 18).
    let server = ServerProcess::start(&["--threads", "1", "--ctx", "4096", "--parallel", "3"], Stdio::null()).unwrap();
    let out = out_file("http");
    let output = run(&["--url", &server.url], &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    check_report(&out, &stderr);
    assert!(stderr.contains("model: smollm2 at "), "the server's model was not picked up:\n{stderr}");
    let round1 = stderr.lines().find(|l| l.starts_with("research round 1: ") && l.contains("t/s")).unwrap();
    assert!(number_after(round1, "up to ").unwrap() > 1, "requests did not overlap: {round1}");
    // The server saw them together too.
    let metrics_url = server.url.trim_end_matches("/v1").to_string() + "/metrics";
    let metrics = ureq::get(&metrics_url).call().unwrap().into_body().read_to_string().unwrap();
    let peak = metrics.lines().find_map(|l| number_after(l, "llama_step_sequences_max{model=\"smollm2\"} "));
    assert!(peak.is_some_and(|n| n > 1), "the server's engine did not batch them:\n{metrics}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_cancels_and_still_writes_what_was_gathered() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    llama_examples::models::default_model().unwrap();
    let out = out_file("interrupted");
    let mut child = Command::new(example_path("deep_research").unwrap())
        .args(SMALL)
        .args(["--max-tokens", "400", "--rounds", "0", "--threads", "2", "--out"])
        .arg(&out)
        .arg(TOPIC)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("research round 1: ") {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "ended before researching:\n{log}");
        log.push_str(&line);
    }
    // Let some tokens arrive, then interrupt the research as a terminal's Ctrl-C would.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let kill = Command::new("sh").arg("-c").arg(format!("kill -INT {}", child.id())).status().unwrap();
    assert!(kill.success());
    stderr.read_to_string(&mut log).unwrap();
    let status = child.wait().unwrap();
    println!("{log}");
    assert_eq!(status.code(), Some(130), "{log}");
    let md = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("nothing written ({e}):\n{log}"));
    let _ = std::fs::remove_file(&out);
    assert!(md.contains("**Interrupted**"), "{md}");
    assert!(md.contains("*(interrupted)*"), "the research in flight is not marked:\n{md}");
    assert!(!md.contains("## Summary"), "no brief can exist yet:\n{md}");
    let appendix = md.split("\n## Appendix: sub-questions\n").nth(1).unwrap();
    assert!(appendix.matches("\n### ").count() >= 3, "{md}");
}
