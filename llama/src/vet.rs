//! Vetting a model file in a child process before loading it in this one.
//!
//! [`ModelBuilder::validate`](crate::ModelBuilder::validate) checks a GGUF file in Rust before
//! llama.cpp's C++ loader sees it, and the exception barrier turns what the loader throws into
//! errors. Neither can promise that no file crashes: the loader is a large C++ parser with
//! assertions that end the process, and a file it accepts still feeds ggml's kernels, which
//! assert on values read straight from the metadata (a NaN norm epsilon passes the loader and
//! aborts the first decode). The validator checks the values it knows of; [`vet_model`] is the
//! containment for the rest. The child loads the file, creates a context and, by default,
//! decodes one token with it (where kernel assertions fire), then exits; a crash, an abort or a
//! hang costs the child, and the parent gets an [`Err`]. Only a file that passed is then loaded
//! in-process.
//!
//! ```no_run
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // First thing in main: when this process is a vetting child, vet and exit here.
//!     llama::vet::child_main_if_requested();
//!
//!     let path = std::env::args().nth(1).ok_or("usage: app MODEL")?;
//!     llama::vet_model(&path)?; // a crash in the C++ loader kills only the child
//!     let model = llama::Model::load(&path)?;
//!     # drop(model);
//!     Ok(())
//! }
//! ```
//!
//! # Why the child re-executes the application
//! The child is the current executable, started again with an environment variable that
//! [`child_main_if_requested`] recognises. The alternative, a helper binary shipped with the
//! crate, would have to be found at run time, installed next to every application, and kept at
//! the same version as the library (a helper built against another llama.cpp vets a different
//! loader). Re-executing needs none of that: the child runs exactly the code and the llama.cpp
//! build the parent would load the file with. The price is one line at the top of `main`; an
//! application that forgets it gets [`VetError::NotWired`] rather than a silent pass, because
//! the child must answer with a line only `child_main_if_requested` writes.
//!
//! Vetting costs a second load of the file (mostly served from the page cache the first time
//! round) and, by default, one decoded token: well under a second for small models.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Batch, ContextParams, Logits, Model, Token};

/// Set in the child's environment to the path of the file to vet.
const ENV_PATH: &str = "LLAMA_RS_VET_MODEL";
/// Set in the child's environment to the options, as written by [`VetOptions::encode`].
const ENV_OPTIONS: &str = "LLAMA_RS_VET_OPTIONS";
/// The child's answer on stdout; without it, an exit status of 0 proves nothing.
const PASSED: &str = "llama-vet: passed";
const REFUSED: &str = "llama-vet: refused: ";
/// How much of the child's stderr an error keeps (the end, where a crash reports).
const STDERR_TAIL: usize = 2048;

/// Why a model file did not pass [`vet_model`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VetError {
    /// The child process could not be started.
    #[error("cannot start the vetting child process: {0}")]
    Spawn(#[source] std::io::Error),
    /// The child ran the application's own `main`: it does not call
    /// [`child_main_if_requested`] first thing.
    #[error("the vetting child did not answer: call llama::vet::child_main_if_requested() first thing in main")]
    NotWired,
    /// The file failed to load or decode with an ordinary error; loading it in-process would
    /// give the same error, not a crash.
    #[error("model refused: {0}")]
    Refused(String),
    /// The child died (signal, abort, or an exit status that is not the child's answer): loading
    /// this file in-process could crash the application.
    #[error("loading the model crashed the vetting child ({status}){}", stderr_suffix(.stderr))]
    Crashed {
        /// How the child ended, e.g. `signal 6 (SIGABRT)`.
        status: String,
        /// The end of the child's stderr (llama.cpp's last messages, an assertion, ...).
        stderr: String,
    },
    /// The child did not finish within the time allowed and was killed.
    #[error("vetting the model took longer than {0:?}; the child was killed")]
    TimedOut(Duration),
}

/// The line of the child's stderr that best says why it died: an assertion or an error if
/// there is one, else the last line.
fn stderr_suffix(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let telling = ["GGML_ASSERT", "GGML_ABORT", "fatal", "terminate", "error", "panicked"];
    let line = lines.iter().rev().find(|l| telling.iter().any(|t| l.contains(t))).or(lines.last());
    line.map(|l| format!(": {l}")).unwrap_or_default()
}

/// How far the child goes with the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VetDepth {
    /// Load the vocabulary only (fast; does not touch the weights).
    Vocab,
    /// Load vocabulary and weights.
    Weights,
    /// Load everything, create a small context and decode one token (the default): also
    /// exercises graph building with the file's hyper-parameters.
    Decode,
}

/// Options for [`vet_model_with`].
#[derive(Debug, Clone)]
pub struct VetOptions {
    timeout: Duration,
    depth: VetDepth,
    validate: bool,
}

impl Default for VetOptions {
    fn default() -> Self {
        VetOptions { timeout: Duration::from_secs(300), depth: VetDepth::Decode, validate: true }
    }
}

impl VetOptions {
    /// Longest the child may take before it is killed and vetting fails (default 300 s:
    /// generous for a large model read from a slow disk).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How far the child goes (default [`VetDepth::Decode`]).
    pub fn depth(mut self, depth: VetDepth) -> Self {
        self.depth = depth;
        self
    }

    /// Whether the child runs the Rust GGUF validation before llama.cpp's loader (default on).
    /// Off hands the file straight to the C++ loader, as
    /// [`ModelBuilder::validate`](crate::ModelBuilder::validate)`(false)` does in-process.
    pub fn validate(mut self, yes: bool) -> Self {
        self.validate = yes;
        self
    }

    fn encode(&self) -> String {
        let depth = match self.depth {
            VetDepth::Vocab => "vocab",
            VetDepth::Weights => "weights",
            VetDepth::Decode => "decode",
        };
        format!("{depth},{}", if self.validate { "validate" } else { "trust" })
    }

    fn decode(text: &str) -> VetOptions {
        let mut options = VetOptions::default();
        for word in text.split(',') {
            match word {
                "vocab" => options.depth = VetDepth::Vocab,
                "weights" => options.depth = VetDepth::Weights,
                "decode" => options.depth = VetDepth::Decode,
                "trust" => options.validate = false,
                _ => {}
            }
        }
        options
    }
}

/// Loads `path` in a child process with the default [`VetOptions`]; `Ok` means the child
/// loaded it and decoded a token without crashing. See the [module docs](self): the
/// application must call [`child_main_if_requested`] first thing in `main`.
pub fn vet_model(path: impl AsRef<Path>) -> Result<(), VetError> {
    vet_model_with(path, &VetOptions::default())
}

/// [`vet_model`] with options.
pub fn vet_model_with(path: impl AsRef<Path>, options: &VetOptions) -> Result<(), VetError> {
    // A vetting child whose main did not stop at `child_main_if_requested` (a test harness, an
    // application that forgot the call) must not start children of its own: they would do the
    // same, without end.
    if std::env::var_os(ENV_PATH).is_some() {
        return Err(VetError::NotWired);
    }
    let exe = std::env::current_exe().map_err(VetError::Spawn)?;
    let child = Command::new(exe)
        .env(ENV_PATH, path.as_ref())
        .env(ENV_OPTIONS, options.encode())
        // ggml would otherwise attach a debugger to print a backtrace before aborting: slow,
        // and it buries the assertion under the debugger's output.
        .env("GGML_NO_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(VetError::Spawn)?;
    let (status, stdout, stderr) = wait_with_timeout(child, options.timeout)?;
    let stdout = String::from_utf8_lossy(&stdout);
    if let Some(reason) = stdout.lines().find_map(|l| l.strip_prefix(REFUSED)) {
        return Err(VetError::Refused(reason.to_string()));
    }
    if status.success() {
        return if stdout.lines().any(|l| l == PASSED) { Ok(()) } else { Err(VetError::NotWired) };
    }
    Err(VetError::Crashed { status: describe(status), stderr: tail(&stderr) })
}

/// Runs the child to completion or kills it at `timeout`; returns its status and output.
fn wait_with_timeout(mut child: Child, timeout: Duration) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), VetError> {
    // Drain both pipes on their own threads: a child that fills a pipe would otherwise block
    // and look like a hang.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(VetError::Spawn)? {
            break status;
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(VetError::TimedOut(timeout));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    };
    let join = |h: JoinHandle<Vec<u8>>| h.join().unwrap_or_default();
    Ok((status, join(out), join(err)))
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                4 => " (SIGILL)",
                6 => " (SIGABRT)",
                7 => " (SIGBUS)",
                8 => " (SIGFPE)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                _ => "",
            };
            return format!("signal {signal}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut start = text.len().saturating_sub(STDERR_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// If this process was started by [`vet_model`] as a vetting child, vets the file and exits;
/// otherwise returns at once. Call it first thing in `main`, before parsing arguments or
/// starting threads, in every application that vets models.
pub fn child_main_if_requested() {
    let Some(path) = std::env::var_os(ENV_PATH) else { return };
    let options = VetOptions::decode(&std::env::var(ENV_OPTIONS).unwrap_or_default());
    let code = match vet_here(PathBuf::from(path), &options) {
        Ok(()) => {
            println!("{PASSED}");
            0
        }
        Err(reason) => {
            // One line: the parent reads the reason back from it.
            println!("{REFUSED}{}", reason.replace('\n', " "));
            2
        }
    };
    std::process::exit(code);
}

/// The child's work: what the application would do with the file, as far as `options` says.
fn vet_here(path: PathBuf, options: &VetOptions) -> Result<(), String> {
    let model = Model::builder(&path)
        .vocab_only(options.depth == VetDepth::Vocab)
        .validate(options.validate)
        .load()
        .map_err(|e| e.to_string())?;
    if options.depth != VetDepth::Decode {
        return Ok(());
    }
    let mut ctx = model.context(ContextParams::default().n_ctx(64).n_batch(64)).map_err(|e| e.to_string())?;
    let vocab = model.vocab();
    let token = vocab.bos().unwrap_or(Token(0));
    let mut batch = Batch::try_new(1, 1).map_err(|e| e.to_string())?;
    batch.add(token, 0, &[0], Logits::Want).map_err(|e| e.to_string())?;
    // Encoder-decoder models run their encoder first; that is the graph to exercise.
    if model.has_encoder() {
        ctx.encode(&batch).map_err(|e| e.to_string())
    } else {
        ctx.decode(&batch).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_survive_the_environment() {
        for depth in [VetDepth::Vocab, VetDepth::Weights, VetDepth::Decode] {
            for validate in [true, false] {
                let o = VetOptions::default().depth(depth).validate(validate);
                let back = VetOptions::decode(&o.encode());
                assert_eq!((back.depth, back.validate), (depth, validate));
            }
        }
    }

    #[test]
    fn stderr_tail_keeps_the_end_on_a_char_boundary() {
        let text = "é".repeat(STDERR_TAIL);
        let t = tail(text.as_bytes());
        assert!(t.len() <= STDERR_TAIL && t.chars().all(|c| c == 'é'));
    }
}
