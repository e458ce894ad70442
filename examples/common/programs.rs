//! The example programs that tests and benches drive: where cargo put them, and the server
//! example started on a free loopback port.

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Example `name` built next to the running test or bench binary: cargo puts those in
/// `target/<profile>/deps` and examples in `target/<profile>/examples` (`cargo test --workspace`
/// builds the examples first).
pub fn example_path(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate the running binary: {e}"))?;
    let dir = exe.parent().and_then(|d| d.parent()).ok_or("the running binary has no target directory")?;
    let path = dir.join("examples").join(name);
    if !path.exists() {
        return Err(format!("{} missing: build it (cargo test --workspace builds examples)", path.display()));
    }
    Ok(path)
}

/// The server example listening on a free loopback port; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    /// The process, e.g. to signal it.
    pub child: Child,
    /// Its base URL as OpenAI clients take it, `http://127.0.0.1:PORT/v1`.
    pub url: String,
}

impl ServerProcess {
    /// Starts `server --port 0 ARGS`, its stderr going to `stderr`, and waits for the URL it
    /// prints first.
    pub fn start(args: &[&str], stderr: Stdio) -> Result<ServerProcess, Box<dyn Error>> {
        ServerProcess::start_example("server", args, stderr)
    }

    /// As [`start`](Self::start), for another example that serves the API (`custom_server`).
    pub fn start_example(name: &str, args: &[&str], stderr: Stdio) -> Result<ServerProcess, Box<dyn Error>> {
        let mut child = Command::new(example_path(name)?)
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let mut first = String::new();
        if let Some(stdout) = child.stdout.take() {
            BufReader::new(stdout).read_line(&mut first)?;
        }
        let url = first.split_whitespace().find(|w| w.starts_with("http://")).map(str::to_string);
        match url {
            Some(url) => Ok(ServerProcess { child, url }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("no URL in the server's first line {first:?}").into())
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
