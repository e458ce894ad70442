//! The device and buffer API on a CPU-only build, and tensor-placement overrides: a pattern
//! reaches llama.cpp's loader (which logs each tensor it moves) and a bad pattern is an error
//! before loading. Its own test binary: it installs the process's one logger.

mod common;

use std::sync::Mutex;

use llama::{AddSpecial, BufferType, DeviceKind, LoadError, Model, Output};

struct Recorder(Mutex<Vec<String>>);

impl log::Log for Recorder {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target() == "llama_cpp"
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Recorder = Recorder(Mutex::new(Vec::new()));

#[test]
fn devices_backends_and_buffer_types_are_listed() {
    let backends = llama::backends();
    assert!(backends.iter().any(|b| b.name() == "CPU"), "{backends:?}");
    let cpu = llama::devices().into_iter().find(|d| d.kind() == DeviceKind::Cpu).expect("a CPU device");
    assert_eq!(cpu.backend_name(), "CPU");
    assert!(!cpu.is_remote() && cpu.endpoint().is_none());
    let (free, total) = cpu.try_memory().unwrap();
    assert!(total > 0 && free <= total, "{free} / {total}");
    let buft = cpu.buffer_type().unwrap();
    assert_eq!(buft, BufferType::cpu());
    assert!(buft.is_host() && buft.alignment() >= 16 && buft.max_size() > 0);
    // The CPU's repacked layouts are offered as extra buffer types on x86 builds.
    if cfg!(target_arch = "x86_64") {
        let extra: Vec<String> = cpu.extra_buffer_types().iter().map(|b| b.name()).collect();
        assert!(extra.iter().any(|n| n.contains("REPACK")), "{extra:?}");
    }
}

#[test]
fn overrides_reach_the_loader_and_bad_patterns_are_errors() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Debug);
    let path = common::models::default_model().unwrap();
    let cpu = llama::devices().into_iter().find(|d| d.kind() == DeviceKind::Cpu).unwrap();

    let model = Model::builder(&path)
        .override_tensor(r"ffn_(up|gate)\.weight$", BufferType::cpu())
        .override_tensor(r"^blk\.0\.attn_q\.", cpu)
        .load()
        .unwrap();
    let lines = std::mem::take(&mut *LOGGER.0.lock().unwrap());
    let moved: Vec<&String> = lines.iter().filter(|l| l.contains("buffer type overridden")).collect();
    let n_layer = model.n_layer();
    let count = |what: &str| moved.iter().filter(|l| l.contains(what)).count();
    assert_eq!(count("ffn_up.weight"), n_layer, "{moved:#?}");
    assert_eq!(count("ffn_gate.weight"), n_layer, "{moved:#?}");
    assert_eq!(count("attn_q.weight"), 1, "only layer 0's: {moved:#?}");
    assert_eq!(moved.len(), 2 * n_layer + 1, "nothing else moved: {moved:#?}");
    // The model still generates.
    let mut ctx = model.context(common::small_ctx()).unwrap();
    common::prefill(&mut ctx, &model.vocab().tokenize("Placement", AddSpecial::Yes).unwrap(), 0);
    assert!(ctx.logits(Output::Last).is_some());

    for bad in ["ffn_(up", "[a-", "*ffn", "a\0b"] {
        match Model::builder(&path).override_tensor(bad, BufferType::cpu()).load() {
            Err(LoadError::BadPattern { pattern, reason }) => {
                assert_eq!(pattern, bad);
                assert!(!reason.is_empty());
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}
