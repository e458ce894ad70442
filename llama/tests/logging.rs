//! llama.cpp's log reaches the `log` crate, and a panicking logger cannot crash the process.
//! Its own test binary: a process has one global logger.

mod common;

use llama::AddSpecial;
use llama::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

struct Recorder {
    lines: Mutex<Vec<String>>,
    panics: AtomicUsize,
}

impl log::Log for Recorder {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target() == "llama_cpp"
    }
    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = record.args().to_string();
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).push(line.clone());
        if line.contains("n_ctx") {
            self.panics.fetch_add(1, Ordering::SeqCst);
            panic!("a buggy logger");
        }
    }
    fn flush(&self) {}
}

static LOGGER: Recorder = Recorder { lines: Mutex::new(Vec::new()), panics: AtomicUsize::new(0) };

#[test]
fn logs_reach_the_log_crate_and_logger_panics_are_contained() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Debug);
    let model = common::smollm2();
    let mut ctx = model.context(common::small_ctx()).unwrap();
    common::prefill(&mut ctx, &model.vocab().tokenize("logging works", AddSpecial::Yes).unwrap(), 0);
    let lines = LOGGER.lines.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l.contains("llama_model_loader") || l.contains("print_info")), "{lines:?}");
    assert!(LOGGER.panics.load(Ordering::SeqCst) > 0, "the logger panicked during context creation");
    assert!(ctx.logits(Output::Last).is_some());
}
