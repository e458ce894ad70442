//! The server example over loopback TCP, driven by the official SDKs of its protocols: the
//! `openai` Python package on chat completions (examples/server/tests/openai_client.py), and
//! `openai`, `anthropic` and `ollama` on the Responses, Messages and Ollama APIs
//! (examples/server/tests/sdk_clients.py). Each test starts the real binary with the flags of
//! one scenario on a free port, runs the script's scenario against it, and stops it.
//!
//! Needs `python3` with those packages and `jsonschema` (`.ci/setup` installs them): without
//! them the tests are skipped, except under CI, where they fail.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use llama_examples::programs::ServerProcess;

/// One server at a time: on a small machine, parallel servers only make each scenario slower.
static SERIAL: Mutex<()> = Mutex::new(());

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/server/tests/openai_client.py");
const SDK_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/server/tests/sdk_clients.py");

fn example(name: &str) -> PathBuf {
    llama_examples::programs::example_path(name).unwrap()
}

/// `ok` when what a test needs (`what`) is there; otherwise the test says it skipped, except
/// under CI, where the absence is a failure.
fn present(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "{what} is required: run .ci/setup");
        eprintln!("skipped: {what} is missing (run .ci/setup)");
    }
    ok
}

/// Whether the Python side can run.
fn python_ready() -> bool {
    python_has(&["openai", "jsonschema"])
}

/// Whether `python3` imports these packages.
fn python_has(packages: &[&str]) -> bool {
    let import = format!("import {}", packages.join(", "));
    let ok = Command::new("python3").args(["-c", &import]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    present(ok, &format!("python3 with the packages {}", packages.join(", ")))
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

    /// Runs a scenario of the chat-completions script.
    fn run(&self, scenario: &str, extra: &[&str]) {
        self.run_script(SCRIPT, scenario, extra);
    }

    /// Runs a scenario of a Python script; panics with both sides' output on failure.
    fn run_script(&self, script: &str, scenario: &str, extra: &[&str]) {
        let started = Instant::now();
        let out =
            Command::new("python3").arg(script).arg(scenario).arg(&self.process.url).args(extra).output().unwrap();
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

/// The Responses, Messages and Ollama APIs through `openai`, `anthropic` and `ollama`: replies,
/// the streams their helpers check event by event, structured output parsed into pydantic
/// models, stop sequences, listings, embeddings, and errors raised as each SDK's own exception.
#[test]
fn every_protocol_through_its_official_sdk() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !python_has(&["openai", "anthropic", "ollama"]) {
        return;
    }
    default_model();
    Server::start("protocols", &["--parallel", "2"]).run_script(SDK_SCRIPT, "protocols", &["smollm2"]);
}

/// Tool calls through the three SDKs (Qwen2.5-Coder-0.5B): a required call, its result sent
/// back and answered, and a streamed call whose argument deltas spell the final arguments.
#[test]
fn tool_calls_through_every_protocol() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !python_has(&["openai", "anthropic", "ollama"]) {
        return;
    }
    llama_examples::models::ensure(&llama_examples::models::QWEN_CODER_DRAFT).unwrap();
    let server = Server::start("sdk-tools", &["--parallel", "2", "-m", "qwen-coder-0.5b"]);
    server.run_script(SDK_SCRIPT, "tools", &["qwen-coder-0.5b"]);
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

const BROWSER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/server/tests/browser");

/// Whether Chromium and the page's npm packages are there (`.ci/setup` installs both).
fn browser_ready() -> bool {
    let ok = Path::new("/usr/bin/chromium").exists()
        && Path::new(BROWSER).join("node_modules/playwright-core").exists()
        && Command::new("node").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    present(ok, "Chromium, node and examples/server/tests/browser/node_modules")
}

/// A plain HTTP GET on loopback; the body.
fn http_get(base: &str, path: &str) -> String {
    use std::io::Write;
    let authority = base.trim_start_matches("http://").split('/').next().unwrap();
    let mut tcp = std::net::TcpStream::connect(authority).unwrap();
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

/// A real browser: a page served from another origin calls the server with the official
/// `openai` JavaScript SDK (bundled from npm). With `--allow-origin` naming that origin the chat
/// streams; without it the browser's preflight is refused, the call fails and no generation
/// runs.
#[test]
fn a_page_from_another_origin_streams_only_when_allowed() {
    use std::io::{BufRead, BufReader, Write};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !browser_ready() {
        return;
    }
    default_model();
    let mut driver = Command::new("node")
        .arg(Path::new(BROWSER).join("driver.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = driver.stdin.take().unwrap();
    let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
    let origin = lines.next().unwrap().unwrap();
    let mut page = |server: &Server| -> serde_json::Value {
        writeln!(stdin, "{}", server.process.url).unwrap();
        let line = lines.next().expect("the driver answers").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };

    let allowed = Server::start("browser-allowed", &["--allow-origin", &origin]);
    let r = page(&allowed);
    assert!(r["error"].is_null() && r["chunks"].as_u64() > Some(1), "{r}\n{}", allowed.log());
    assert!(!r["text"].as_str().unwrap_or("").is_empty(), "{r}");

    let refused = Server::start("browser-refused", &[]);
    let r = page(&refused);
    assert!(r["error"].as_str().is_some_and(|e| e.contains("Connection")), "{r}");
    let metrics = http_get(&refused.process.url, "/metrics");
    assert!(metrics.contains("llama_requests_total{model=\"smollm2\"} 0"), "{metrics}");
    assert!(refused.log().contains("OPTIONS /v1/chat/completions 405"), "{}", refused.log());
    drop(stdin);
    let _ = driver.wait();
}
