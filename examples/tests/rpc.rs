//! ggml's RPC backend over loopback, servers in child processes (`examples/rpc_server.rs`):
//! SmolLM2 with every layer on one server, then split across two, gives the local greedy tokens
//! (same threads, repacking off on both sides, as the server's CPU backend does not repack).
//! `cargo test --workspace` builds the example and runs this (the examples package enables `rpc`
//! by default); alone: `cargo build --example rpc_server && cargo test --test rpc_loopback`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use llama::Model;
use llama_examples::greedy::rust_greedy;

/// Same thread count on the servers and the local context: greedy tokens are identical across
/// programs only then.
const THREADS: usize = 1;
const PROMPT: &str = "The three laws of robotics are";

struct Recorder(Mutex<Vec<String>>);

impl log::Log for Recorder {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target() == "llama_cpp" && m.level() <= log::Level::Info
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Recorder = Recorder(Mutex::new(Vec::new()));
/// The model runs one at a time: two cores, and one logger whose lines each test reads.
static SERIAL: Mutex<()> = Mutex::new(());

/// A server child, killed when dropped.
struct ServerProcess {
    child: Child,
    endpoint: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example(name: &str) -> std::path::PathBuf {
    // Test binaries live in target/<profile>/deps; examples next door.
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|d| d.parent()).unwrap().join("examples").join(name);
    assert!(path.exists(), "{} missing: `cargo build --example {name}` first", path.display());
    path
}

fn start_server() -> ServerProcess {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(example("rpc_server"))
        .args(["--port", &port.to_string(), "--threads", &THREADS.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = ServerProcess { child, endpoint: format!("127.0.0.1:{port}") };
    let t0 = Instant::now();
    loop {
        match llama::rpc::probe_with_timeout(&server.endpoint, Duration::from_secs(2)) {
            Ok(info) => {
                assert_eq!(info.version, llama::rpc::PROTOCOL);
                return server;
            }
            Err(e) if t0.elapsed() > Duration::from_secs(30) => panic!("server never came up: {e}"),
            Err(_) => {
                if let Ok(Some(status)) = server.child.try_wait() {
                    panic!("rpc_server exited early: {status}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn setup() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    guard
}

fn local_tokens(path: &std::path::Path) -> Vec<i32> {
    let model = Model::builder(path).repack(false).load().unwrap();
    rust_greedy(&model, PROMPT, 32, 24, THREADS).unwrap().tokens
}

#[test]
fn every_layer_on_one_server_matches_local_greedy() {
    let _serial = setup();
    let path = llama_examples::models::default_model().unwrap();
    let expected = local_tokens(&path);

    let server = start_server();
    LOGGER.0.lock().unwrap().clear();
    let model = Model::builder(&path).repack(false).rpc_servers(&[&server.endpoint]).load().unwrap();
    let lines = std::mem::take(&mut *LOGGER.0.lock().unwrap());
    let n = model.n_layer() + 1;
    assert!(
        lines.iter().any(|l| l.contains(&format!("offloaded {n}/{n} layers"))),
        "every layer (and the output) on the RPC device: {lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains(&format!("[{}] model buffer size", server.endpoint))), "{lines:#?}");
    let got = rust_greedy(&model, PROMPT, 32, 24, THREADS).unwrap().tokens;
    assert_eq!(got, expected);

    // The server serves one client at a time and this process is it: a second model on the
    // same server shares ggml's connection (a full probe here would wait for a busy server).
    let second = Model::builder(&path).repack(false).rpc_servers(&[&server.endpoint]).load().unwrap();
    assert_eq!(rust_greedy(&second, PROMPT, 32, 24, THREADS).unwrap().tokens, expected);
}

#[test]
fn two_servers_share_the_layers_and_match_local_greedy() {
    let _serial = setup();
    let path = llama_examples::models::default_model().unwrap();
    let expected = local_tokens(&path);

    let (a, b) = (start_server(), start_server());
    LOGGER.0.lock().unwrap().clear();
    let model = Model::builder(&path)
        .repack(false)
        .rpc_servers(&[&a.endpoint, &b.endpoint])
        .tensor_split(&[1.0, 1.0])
        .load()
        .unwrap();
    let lines = std::mem::take(&mut *LOGGER.0.lock().unwrap());
    for server in [&a, &b] {
        assert!(
            lines.iter().any(|l| l.contains(&format!("[{}] model buffer size", server.endpoint))),
            "weights on {}: {lines:#?}",
            server.endpoint
        );
    }
    let got = rust_greedy(&model, PROMPT, 32, 24, THREADS).unwrap().tokens;
    assert_eq!(got, expected);
}

#[test]
fn a_server_that_went_away_is_an_error_at_the_next_load() {
    let _serial = setup();
    let path = llama_examples::models::default_model().unwrap();
    let server = start_server();
    let endpoint = server.endpoint.clone();
    let remote = llama::rpc::connect(&endpoint).unwrap();
    assert_eq!(remote.devices().len(), 1);
    assert!(remote.devices()[0].is_remote());
    assert_eq!(remote.devices()[0].endpoint().as_deref(), Some(endpoint.as_str()));
    drop(server);
    // ggml has this server registered; loading on its devices now would abort in ggml's client.
    let err = Model::builder(&path).devices(remote.devices()).load().unwrap_err();
    assert!(matches!(err, llama::LoadError::Rpc(llama::rpc::RpcError::Unreachable { .. })), "{err}");
    assert_eq!(remote.devices()[0].memory(), (0, 0));
}

/// What ggml's client aborts the process on (`Failed to connect`, `Remote RPC server crashed or
/// returned malformed response`) is an error here, and this process goes on.
#[test]
fn an_unreachable_endpoint_and_a_wrong_protocol_peer_are_errors_not_aborts() {
    let path = llama_examples::models::default_model().unwrap();
    let unreachable = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let http = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for sock in listener.incoming().take(2) {
            let Ok(mut sock) = sock else { continue };
            let _ = sock.read(&mut [0u8; 64]);
            let _ = sock.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    use llama::rpc::RpcError;
    let err = llama::rpc::connect(&unreachable).unwrap_err();
    assert!(matches!(err, RpcError::Unreachable { .. }), "{err}");
    let err = llama::rpc::connect(&http).unwrap_err();
    assert!(matches!(err, RpcError::Protocol { .. }), "{err}");
    for endpoint in [&unreachable, &http] {
        let err = Model::builder(&path).rpc_servers(&[endpoint]).load().unwrap_err();
        assert!(matches!(err, llama::LoadError::Rpc(_)), "{err}");
    }
}
