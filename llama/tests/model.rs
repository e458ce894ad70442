//! Model metadata, loading options, save, quantize, adapters and devices on the real models.

mod common;

use common::{argmax, both, gemma3, max_rel_diff, prefill, scratch, small_ctx, smollm2};
use llama::AddSpecial;
use llama::Logits;
use llama::Output;
use llama::{
    AdapterError, ControlVector, DeviceKind, Ftype, LoadError, LoraAdapter, MetaOverride, Model, QuantizeError,
    QuantizeParams, RopeType, SaveError, Token,
};

fn next_logits(model: &Model, text: &str) -> Vec<f32> {
    let mut ctx = model.context(small_ctx()).unwrap();
    prefill(&mut ctx, &model.vocab().tokenize(text, AddSpecial::Yes).unwrap(), 0);
    ctx.logits(Output::Last).unwrap().to_vec()
}

/// Next-token logits after `prompt` on an emptied cache.
fn fresh_logits(ctx: &mut llama::Context, prompt: &[Token]) -> Vec<f32> {
    ctx.clear_kv();
    prefill(ctx, prompt, 0);
    ctx.logits(Output::Last).unwrap().to_vec()
}

fn greedy_text(model: &Model, prompt: &str, n: usize) -> String {
    let mut ctx = model.context(small_ctx()).unwrap();
    let prompt = model.vocab().tokenize(prompt, AddSpecial::Yes).unwrap();
    prefill(&mut ctx, &prompt, 0);
    let mut out = Vec::new();
    let mut batch = llama::Batch::new(1, 1);
    for pos in (prompt.len()..).take(n) {
        let t = Token(argmax(ctx.logits(Output::Last).unwrap()) as i32);
        if model.vocab().is_eog(t) {
            break;
        }
        out.push(t);
        batch.clear();
        batch.add(t, pos, &[0], Logits::Want).unwrap();
        ctx.decode(&batch).unwrap();
    }
    model.vocab().detokenize(&out).unwrap()
}

#[test]
fn metadata_of_both_models() {
    let s = smollm2();
    assert_eq!(s.architecture(), "llama");
    assert_eq!((s.n_layer(), s.n_head(), s.n_head_kv(), s.n_embd()), (30, 9, 3, 576));
    assert_eq!(s.n_ctx_train(), 8192);
    assert_eq!(s.rope_type(), RopeType::Norm);
    assert!(s.has_decoder() && !s.has_encoder() && !s.is_recurrent());
    assert!(s.size() > 50_000_000 && s.size() < 120_000_000);

    let g = gemma3();
    assert_eq!(g.architecture(), "gemma3");
    assert_eq!(g.rope_type(), RopeType::Neox);
    assert!(g.n_swa() > 0, "Gemma-3 uses sliding-window attention");
    assert!(g.description().contains("gemma3"));
    // This GGUF ships without `tokenizer.chat_template`.
    assert_eq!(g.chat_template(), None);
    assert!(matches!(
        g.apply_chat_template(&[llama::ChatMessage::new("user", "hi")], true),
        Err(llama::ChatError::NoTemplate)
    ));

    for m in both() {
        let meta = m.metadata();
        assert!(meta.len() > 10);
        assert!(meta.iter().any(|(k, v)| k == "general.architecture" && *v == m.architecture()));
        for (k, v) in meta.iter().take(20) {
            if !v.is_empty() && !k.starts_with("tokenizer.") {
                assert_eq!(m.meta(k).as_deref(), Some(v.as_str()), "{k}");
            }
        }
    }
}

#[test]
fn metadata_overrides_and_vocab_only() {
    let path = common::models::default_model().unwrap();
    let m = Model::builder(&path).override_meta("llama.context_length", MetaOverride::Int(4096)).load().unwrap();
    assert_eq!(m.n_ctx_train(), 4096);
    let m = Model::builder(&path).vocab_only(true).load().unwrap();
    assert_eq!(
        m.vocab().tokenize("hello world", AddSpecial::No).unwrap(),
        smollm2().vocab().tokenize("hello world", AddSpecial::No).unwrap()
    );

    let too_long = "k".repeat(200);
    let r = Model::builder(&path).override_meta(too_long, MetaOverride::Int(1)).load();
    assert!(matches!(r, Err(LoadError::InvalidParam(_))));
    let r = Model::builder(&path).tensor_split(&vec![1.0; 4096]).load();
    assert!(matches!(r, Err(LoadError::InvalidParam(_))));
    // mmap off and mlock requests still load.
    Model::builder(&path).mmap(false).vocab_only(true).load().unwrap();
}

#[test]
fn garbage_after_a_valid_magic_is_rejected() {
    let dir = scratch("garbage");
    let mut rng = 0x1234_5678_9abc_def0u64;
    for (i, len) in [4usize, 16, 64, 4096, 100_000].into_iter().enumerate() {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend((0..len).map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        }));
        let p = dir.join(format!("garbage-{i}.gguf"));
        std::fs::write(&p, &bytes).unwrap();
        assert!(matches!(Model::load(&p), Err(LoadError::Malformed { .. })), "len {len}");
        let unvalidated = Model::builder(&p).validate(false).load();
        assert!(matches!(unvalidated, Err(LoadError::Rejected { .. })), "len {len}");
    }
    // A valid header whose tensor count is absurd.
    let mut header = b"GGUF".to_vec();
    header.extend(3u32.to_le_bytes());
    header.extend(u64::MAX.to_le_bytes());
    header.extend(0u64.to_le_bytes());
    let p = dir.join("huge-count.gguf");
    std::fs::write(&p, &header).unwrap();
    assert!(matches!(Model::load(&p), Err(LoadError::Malformed { .. })));
    assert!(matches!(Model::builder(&p).validate(false).load(), Err(LoadError::Rejected { .. })));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn quantize_requantizes_and_the_results_generate() {
    let src = common::models::default_model().unwrap();
    let dir = scratch("quantize");
    let expected = greedy_text(smollm2(), "The capital of France is", 8);

    // Already-quantized weights need allow_requantize.
    let refused = llama::quantize(&src, dir.join("refused.gguf"), QuantizeParams::new(Ftype::Q8_0));
    match refused {
        Err(QuantizeError::Failed(reason)) => assert!(reason.contains("requantizing"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(!dir.join("refused.gguf").exists());

    for ftype in [Ftype::Q8_0, Ftype::F16] {
        let out = dir.join(format!("smollm2-{ftype:?}.gguf"));
        let mut last = 0.0f32;
        let progress = std::rc::Rc::new(std::cell::Cell::new(0.0f32));
        let p = progress.clone();
        let params = QuantizeParams::new(ftype).allow_requantize(true).threads(2).progress(move |f| p.set(f));
        llama::quantize(&src, &out, params).unwrap();
        last = last.max(progress.get());
        assert_eq!(last, 1.0, "progress reached the end");
        let q = Model::load(&out).unwrap();
        assert!(q.description().contains(&ftype.name().split(' ').next().unwrap().to_string()), "{}", q.description());
        let text = greedy_text(&q, "The capital of France is", 8);
        assert!(text.contains("Paris"), "{ftype:?}: {text:?} (Q4_1 said {expected:?})");
    }
    assert!(matches!(
        llama::quantize(dir.join("missing.gguf"), dir.join("x.gguf"), QuantizeParams::new(Ftype::Q8_0)),
        Err(QuantizeError::Input(_))
    ));
    // Gemma-3 (Q4_K_M) re-quantized too.
    let gemma_q8 = dir.join("gemma-q8.gguf");
    llama::quantize(model_path(gemma3()), &gemma_q8, QuantizeParams::new(Ftype::Q8_0).allow_requantize(true)).unwrap();
    let g = Model::load(&gemma_q8).unwrap();
    assert!(g.description().contains("Q8_0"), "{}", g.description());
    assert!(!greedy_text(&g, "The capital of France is", 8).is_empty());
    assert!(Ftype::ALL.iter().all(|f| !f.name().is_empty()));
    assert!(Ftype::TQ1_0.name().contains("TQ1_0"));

    // A panicking progress callback fails the call, keeps its message and leaves no file.
    let out = dir.join("panicked.gguf");
    let params = QuantizeParams::new(Ftype::Q8_0).allow_requantize(true).progress(|f| {
        if f > 0.5 {
            panic!("progress bug at {f}")
        }
    });
    match llama::quantize(&src, &out, params) {
        Err(QuantizeError::CallbackPanicked(message)) => assert!(message.starts_with("progress bug at"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn save_then_reload_gives_the_same_logits() {
    let dir = scratch("save");
    let out = dir.join("saved.gguf");
    smollm2().save(&out).unwrap();
    let reloaded = Model::load(&out).unwrap();
    let a = next_logits(smollm2(), "Saving models");
    let b = next_logits(&reloaded, "Saving models");
    assert_eq!(a, b);
    match smollm2().save(dir.join("no/such/dir/m.gguf")) {
        Err(SaveError::Rejected { path, .. }) => assert!(path.ends_with("no/such/dir/m.gguf")),
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes a minimal GGUF v3 file: scalar metadata plus F32 tensors.
fn write_gguf(path: &std::path::Path, kv: &[(&str, Kv)], tensors: &[(&str, Vec<u64>, Vec<f32>)]) {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kv.len() as u64).to_le_bytes());
    for (key, value) in kv {
        string(&mut out, key);
        match value {
            Kv::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, s);
            }
            Kv::F32(f) => {
                out.extend(6u32.to_le_bytes());
                out.extend(f.to_le_bytes());
            }
        }
    }
    let mut offset = 0u64;
    for (name, dims, data) in tensors {
        string(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(0u32.to_le_bytes()); // GGML_TYPE_F32
        out.extend(offset.to_le_bytes());
        offset += (data.len() as u64 * 4).div_ceil(32) * 32;
    }
    out.resize(out.len().next_multiple_of(32), 0);
    for (_, _, data) in tensors {
        for x in data {
            out.extend(x.to_le_bytes());
        }
        out.resize(out.len().next_multiple_of(32), 0);
    }
    std::fs::write(path, out).unwrap();
}

enum Kv {
    Str(&'static str),
    F32(f32),
}

/// A rank-4 LoRA on the model's first query projection, deterministic values.
fn tiny_lora(path: &std::path::Path, model: &Model, arch: &'static str) {
    let head_dim = model
        .meta(&format!("{}.attention.key_length", model.architecture()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(model.n_embd() / model.n_head());
    let (n_in, n_out, r) = (model.n_embd() as u64, (model.n_head() * head_dim) as u64, 4u64);
    let a: Vec<f32> = (0..n_in * r).map(|i| ((i % 7) as f32 - 3.0) * 0.05).collect();
    let b: Vec<f32> = (0..r * n_out).map(|i| ((i % 5) as f32 - 2.0) * 0.05).collect();
    write_gguf(
        path,
        &[
            ("general.architecture", Kv::Str(arch)),
            ("general.type", Kv::Str("adapter")),
            ("adapter.type", Kv::Str("lora")),
            ("adapter.lora.alpha", Kv::F32(4.0)),
        ],
        &[("blk.0.attn_q.weight.lora_a", vec![n_in, r], a), ("blk.0.attn_q.weight.lora_b", vec![r, n_out], b)],
    );
}

#[test]
fn lora_adapter_built_by_the_test_changes_and_restores_logits() {
    for model in both() {
        lora_on(model);
    }
}

fn lora_on(model: &Model) {
    let dir = scratch(&format!("lora-{}", model.architecture()));
    let path = dir.join("tiny-lora.gguf");
    let arch: &'static str = if model.architecture() == "llama" { "llama" } else { "gemma3" };
    tiny_lora(&path, model, arch);
    let lora = LoraAdapter::load(model, &path).unwrap();
    assert!(lora.metadata().iter().any(|(k, v)| k == "adapter.type" && v == "lora"));

    let prompt = model.vocab().tokenize("LoRA adapters nudge a model", AddSpecial::Yes).unwrap();
    let mut ctx = model.context(small_ctx()).unwrap();
    let run = |ctx: &mut llama::Context| fresh_logits(ctx, &prompt);
    let base = run(&mut ctx);
    ctx.set_lora_adapters(&[(lora.clone(), 0.0)]).unwrap();
    assert!(max_rel_diff(&base, &run(&mut ctx)) < 1e-5, "scale 0 is the base model");
    ctx.set_lora_adapters(&[(lora.clone(), 1.0)]).unwrap();
    let adapted = run(&mut ctx);
    assert!(max_rel_diff(&base, &adapted) > 1e-3, "the adapter must change the logits");
    ctx.set_lora_adapters(&[(lora.clone(), 2.0)]).unwrap();
    assert_ne!(run(&mut ctx), adapted, "scale matters");
    drop(lora); // the context keeps the applied adapter alive
    assert!(run(&mut ctx).iter().all(|x| x.is_finite()));
    ctx.set_lora_adapters(&[]).unwrap();
    assert!(max_rel_diff(&base, &run(&mut ctx)) < 1e-5, "removed");

    // Adapters for another architecture, another model, or not adapters at all are errors.
    let wrong_arch = dir.join("other-arch-lora.gguf");
    tiny_lora(&wrong_arch, model, if arch == "llama" { "gemma3" } else { "llama" });
    assert!(matches!(LoraAdapter::load(model, &wrong_arch), Err(AdapterError::Rejected(_))));
    assert!(matches!(
        LoraAdapter::load(model, common::models::default_model().unwrap()),
        Err(AdapterError::Rejected(_))
    ));
    let other_model = Model::load(model_path(model)).unwrap();
    let foreign = LoraAdapter::load(&other_model, &path).unwrap();
    assert!(matches!(ctx.set_lora_adapters(&[(foreign.clone(), 1.0)]), Err(AdapterError::WrongModel)));
    let mine = LoraAdapter::load(model, &path).unwrap();
    assert!(matches!(ctx.set_lora_adapters(&[(mine, f32::NAN)]), Err(AdapterError::InvalidScale)));
    let _ = std::fs::remove_dir_all(dir);
}

fn model_path(model: &Model) -> std::path::PathBuf {
    if model.architecture() == "llama" {
        common::models::default_model().unwrap()
    } else {
        common::models::ensure(&common::models::GEMMA3).unwrap()
    }
}

#[test]
fn control_vector_changes_and_restores_logits() {
    for model in both() {
        cvec_on(model);
    }
}

fn cvec_on(model: &Model) {
    let prompt = model.vocab().tokenize("Control vectors steer", AddSpecial::Yes).unwrap();
    let mut ctx = model.context(small_ctx()).unwrap();
    let run = |ctx: &mut llama::Context| fresh_logits(ctx, &prompt);
    let base = run(&mut ctx);
    let (n_embd, n_layer) = (model.n_embd(), model.n_layer() as i32);
    let cvec = ControlVector {
        data: (0..n_embd * (n_layer as usize - 1)).map(|i| ((i % 11) as f32 - 5.0) * 0.02).collect(),
        layer_start: 1,
        layer_end: n_layer - 1,
    };
    ctx.set_control_vector(Some(&cvec)).unwrap();
    assert!(max_rel_diff(&base, &run(&mut ctx)) > 1e-3);
    ctx.set_control_vector(None).unwrap();
    assert!(max_rel_diff(&base, &run(&mut ctx)) < 1e-5);

    let mut bad = |c: ControlVector| ctx.set_control_vector(Some(&c)).is_err();
    assert!(bad(ControlVector { data: vec![0.0; n_embd - 1], ..cvec.clone() }));
    assert!(bad(ControlVector { data: vec![0.0; n_embd * (n_layer as usize + 1)], ..cvec.clone() }));
    assert!(bad(ControlVector { layer_start: 0, ..cvec.clone() }));
    assert!(bad(ControlVector { layer_end: n_layer + 1, ..cvec.clone() }));
    assert!(bad(ControlVector { data: vec![f32::NAN; n_embd], ..cvec.clone() }));
}

#[test]
fn devices_and_system_info() {
    let devices = llama::devices();
    assert!(devices.iter().any(|d| d.kind() == DeviceKind::Cpu), "{devices:?}");
    let cpu = devices.iter().find(|d| d.kind() == DeviceKind::Cpu).unwrap();
    assert!(!cpu.name().is_empty());
    assert!(llama::system_info().contains("CPU"));
    assert!(!llama::version().is_empty());
    // Loading onto an explicit device list works.
    let m = Model::builder(common::models::default_model().unwrap()).devices(&[*cpu]).gpu_layers(0).load().unwrap();
    assert_eq!(next_logits(&m, "Devices"), next_logits(smollm2(), "Devices"));
}
