//! The server example over loopback TCP, driven by the official `openai` Python package
//! (examples/server/tests/openai_client.py): each test starts the real binary with the flags
//! of one scenario on a free port, runs the script's scenario against it, and stops it.
//!
//! Needs `python3` with `openai` and `jsonschema` (`.ci/setup` installs them): without them
//! the tests are skipped, except under CI, where they fail.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use llama_examples::programs::ServerProcess;

/// One server at a time: on a small machine, parallel servers only make each scenario slower.
static SERIAL: Mutex<()> = Mutex::new(());

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/server/tests/openai_client.py");

fn example(name: &str) -> PathBuf {
    llama_examples::programs::example_path(name).unwrap()
}

/// Whether the Python side can run; under CI its absence is a failure.
fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import openai, jsonschema"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "python3 with openai and jsonschema is required: run .ci/setup");
        eprintln!("skipped: python3 with the openai and jsonschema packages is missing (run .ci/setup)");
    }
    ok
}

struct Server {
    process: ServerProcess,
    log: PathBuf,
}

impl Server {
    /// Starts the server with `args` on a free port, one decoding thread (on a shared machine a
    /// second ggml thread spends its time waiting at barriers), and a small cache.
    fn start(name: &str, args: &[&str]) -> Server {
        let log = std::env::temp_dir().join(format!("llama-server-{name}-{}.log", std::process::id()));
        let mut all = vec!["--threads", "1", "--ctx", "2048"];
        all.extend_from_slice(args);
        let process = ServerProcess::start(&all, Stdio::from(std::fs::File::create(&log).unwrap())).unwrap();
        Server { process, log }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// Runs a scenario of the Python script; panics with both sides' output on failure.
    fn run(&self, scenario: &str, extra: &[&str]) {
        let started = Instant::now();
        let out =
            Command::new("python3").arg(SCRIPT).arg(scenario).arg(&self.process.url).args(extra).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "scenario {scenario} failed:\n{stdout}\n{stderr}\n--- server log ---\n{}",
            self.log()
        );
        println!("{} ({:.1}s)", stdout.trim(), started.elapsed().as_secs_f64());
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The process itself is stopped when `process` drops.
        let _ = std::fs::remove_file(&self.log);
    }
}

fn default_model() -> PathBuf {
    llama_examples::models::default_model().unwrap()
}

/// Chat and streaming with usage, completions, embeddings, structured output validated by
/// `jsonschema`, the model list, 8 concurrent streams, and every bad input with `/health` after.
#[test]
fn openai_client_against_the_server() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !python_ready() {
        return;
    }
    default_model();
    Server::start("main", &["--parallel", "8"]).run("main", &[]);
}

/// `--parallel 1 --max-queue 1`: a client that disconnects mid-stream frees the only slot; then
/// one request runs, one queues and the next gets 503 with `Retry-After`.
#[test]
fn disconnects_cancel_and_a_full_queue_answers_503() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !python_ready() {
        return;
    }
    default_model();
    Server::start("busy", &["--parallel", "1", "--max-queue", "1"]).run("busy", &[]);
}

/// `--keep-alive 0`: unloaded after each reply and reloaded by the next request; a request's
/// own `keep_alive` overrides the flag.
#[test]
fn keep_alive_zero_unloads_after_the_reply() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !python_ready() {
        return;
    }
    default_model();
    Server::start("keepalive", &["--keep-alive", "0", "--parallel", "1"]).run("keepalive", &[]);
}

/// `--max-loaded-models 1` with two models (SmolLM2 and a Q4_0 re-quantization of it) asked
/// for in turn: each request evicts the other model.
#[test]
fn one_loaded_model_alternating_between_two() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !python_ready() {
        return;
    }
    let q4_1 = default_model();
    let q4_0 = llama_examples::derived::requantized(&q4_1, "q4_0").unwrap();
    let (a, b) = (format!("smollm2={}", q4_1.display()), format!("smollm2-q4_0={}", q4_0.display()));
    let server = Server::start("swap", &["--max-loaded-models", "1", "--parallel", "1", "-m", &a, "-m", &b]);
    server.run("swap", &["smollm2", "smollm2-q4_0"]);
}

/// Tool calling with Qwen2.5-Coder-0.5B (its template supports tools) through the official
/// client: required, auto, a named function, the tool result's round trip, streamed tool-call
/// deltas, and bad tool definitions as 400s.
#[test]
fn tool_calls_through_the_openai_client() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !python_ready() {
        return;
    }
    llama_examples::models::ensure(&llama_examples::models::QWEN_CODER_DRAFT).unwrap();
    let server = Server::start("tools", &["--parallel", "2", "-m", "qwen-coder-0.5b"]);
    server.run("tools", &["qwen-coder-0.5b"]);
}

/// SIGTERM while a stream runs: the stream still ends with `[DONE]`, then the process exits 0.
#[cfg(unix)]
#[test]
fn sigterm_lets_the_stream_finish_then_exits_zero() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !python_ready() {
        return;
    }
    default_model();
    let mut server = Server::start("shutdown", &["--parallel", "1"]);
    let pid = server.process.child.id().to_string();
    server.run("shutdown", &[&pid]);
    let status = server.wait(Duration::from_secs(30));
    assert!(status.success(), "exit status {status}:\n{}", server.log());
    assert!(server.log().contains("stopped"), "{}", server.log());
}

/// The flags and their environment variables are what the README's table says.
#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let out = Command::new(example("server")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, env) in [
        ("--host", "LLAMA_SERVER_HOST"),
        ("--port", "LLAMA_SERVER_PORT"),
        ("--model", "LLAMA_SERVER_MODELS"),
        ("--parallel", "LLAMA_SERVER_PARALLEL"),
        ("--ctx", "LLAMA_SERVER_CTX"),
        ("--threads", "LLAMA_SERVER_THREADS"),
        ("--keep-alive", "LLAMA_SERVER_KEEP_ALIVE"),
        ("--max-loaded-models", "LLAMA_SERVER_MAX_LOADED_MODELS"),
        ("--max-queue", "LLAMA_SERVER_MAX_QUEUE"),
        ("--api-key", "LLAMA_SERVER_API_KEY"),
        ("--cache-type", "LLAMA_SERVER_CACHE_TYPE"),
        ("--flash-attn", "LLAMA_SERVER_FLASH_ATTN"),
        ("--load-wait", "LLAMA_SERVER_LOAD_WAIT"),
        ("--allow-host", "LLAMA_SERVER_HOSTS"),
    ] {
        assert!(help.contains(flag) && help.contains(env), "{flag} / {env} missing from --help:\n{help}");
    }
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(readme.contains("LLAMA_SERVER_KEEP_ALIVE"), "the README's server section lists the variables");
}
