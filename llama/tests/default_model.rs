//! The safe API on the real default model.

mod common;

use common::{small_ctx, smollm2};
use llama::Logits;
use llama::Output;
use llama::{
    AddSpecial, Batch, BatchError, ChatMessage, ControlText, DecodeError, LoadError, Model, SampleError, Sampler,
    SpecialSyntax, Token, Utf8Decoder,
};

/// Greedy continuation of `prompt` on the default model, `n` tokens.
fn greedy(prompt: &str, n: usize) -> (Vec<Token>, String) {
    greedy_on(smollm2(), prompt, n)
}

fn greedy_on(model: &Model, prompt: &str, n: usize) -> (Vec<Token>, String) {
    let mut ctx = model.context(small_ctx()).unwrap();
    let vocab = model.vocab();
    let tokens = vocab.tokenize(prompt, AddSpecial::Yes).unwrap();
    let mut batch = Batch::new(512, 1);
    batch.add_sequence(&tokens, 0, 0, Logits::Want).unwrap();
    ctx.decode(&batch).unwrap();
    let mut sampler = Sampler::greedy();
    let (mut out, mut text, mut dec) = (Vec::new(), String::new(), Utf8Decoder::default());
    for pos in (tokens.len()..).take(n) {
        let t = sampler.sample(&ctx, Output::Last).unwrap();
        if vocab.is_eog(t) {
            break;
        }
        out.push(t);
        text += &dec.push(&vocab.token_to_bytes(t, ControlText::Hide).unwrap());
        batch.clear();
        batch.add(t, pos, &[0], Logits::Want).unwrap();
        ctx.decode(&batch).unwrap();
    }
    text += &dec.finish();
    (out, text)
}

#[test]
fn metadata_describes_smollm2() {
    let m = smollm2();
    assert_eq!(m.meta("general.architecture").as_deref(), Some("llama"));
    assert_eq!(m.vocab().n_tokens(), 49152);
    assert!(m.n_params() > 100_000_000 && m.n_params() < 200_000_000, "{}", m.n_params());
    assert_eq!(m.n_embd(), 576);
    assert!(m.chat_template().is_some_and(|t| t.contains("im_start")));
    assert_eq!(m.meta("no.such.key"), None);
}

#[test]
fn greedy_generation_is_deterministic_and_coherent() {
    let (a, text) = greedy("The capital of France is", 16);
    let (b, _) = greedy("The capital of France is", 16);
    assert_eq!(a, b);
    assert!(text.contains("Paris"), "unexpected continuation: {text:?}");
}

#[test]
fn tokenize_round_trips_multilingual_text() {
    let vocab = smollm2().vocab();
    for text in ["Hello, world!", "naïve café — 日本語のテキスト", "emoji 🦀🚀 and\ttabs\nnewlines"] {
        let tokens = vocab.tokenize(text, AddSpecial::No).unwrap();
        assert!(!tokens.is_empty());
        assert_eq!(vocab.detokenize(&tokens).unwrap(), text);
        // Piece-by-piece streaming gives the same text.
        let mut d = Utf8Decoder::default();
        let mut s: String =
            tokens.iter().map(|&t| d.push(&vocab.token_to_bytes(t, ControlText::Hide).unwrap())).collect();
        s += &d.finish();
        assert_eq!(s, text);
    }
}

#[test]
fn user_text_cannot_inject_control_tokens() {
    let vocab = smollm2().vocab();
    let plain = vocab.tokenize("<|im_end|>", AddSpecial::No).unwrap();
    let special = vocab.tokenize_with("<|im_end|>", AddSpecial::No, SpecialSyntax::Tokens).unwrap();
    assert_eq!(special.len(), 1);
    assert!(vocab.is_eog(special[0]));
    assert!(plain.len() > 1 && !plain.iter().any(|&t| vocab.is_eog(t)));
}

#[test]
fn out_of_range_tokens_are_errors() {
    let model = smollm2();
    let vocab = model.vocab();
    assert!(vocab.detokenize(&[Token(0), Token(49152)]).is_err());
    assert!(vocab.token_to_bytes(Token(-1), ControlText::Hide).is_err());
    let mut ctx = model.context(small_ctx()).unwrap();
    let mut batch = Batch::new(4, 1);
    batch.add(Token(1_000_000), 0, &[0], Logits::Want).unwrap();
    assert_eq!(ctx.decode(&batch), Err(DecodeError::InvalidToken { token: 1_000_000, n_vocab: 49152 }));
}

#[test]
fn bad_batches_are_errors() {
    let model = smollm2();
    let mut ctx = model.context(small_ctx().n_batch(8)).unwrap();
    assert_eq!(ctx.decode(&Batch::new(4, 1)), Err(DecodeError::Empty));

    let mut big = Batch::new(16, 1);
    big.add_sequence(&[Token(1); 9], 0, 0, Logits::Want).unwrap();
    assert_eq!(ctx.decode(&big), Err(DecodeError::TooLarge { len: 9, n_batch: 8 }));

    let mut full = Batch::new(2, 1);
    full.add_sequence(&[Token(1), Token(2)], 0, 0, Logits::Skip).unwrap();
    assert_eq!(full.add(Token(3), 2, &[0], Logits::Want), Err(BatchError::Full(2)));
    assert_eq!(full.add_sequence(&[Token(3)], 2, 0, Logits::Want), Err(BatchError::Full(2)));
    assert_eq!(full.len(), 2);

    let mut b = Batch::new(4, 1);
    let beyond = i32::MAX as usize + 1;
    assert_eq!(b.add(Token(1), beyond, &[0], Logits::Want), Err(BatchError::PositionTooLarge(beyond)));
    assert_eq!(
        b.add_sequence(&[Token(1), Token(2)], i32::MAX as usize, 0, Logits::Want),
        Err(BatchError::PositionTooLarge(beyond))
    );
    assert_eq!(b.len(), 0, "a refused sequence adds nothing");
    assert_eq!(b.add(Token(1), 0, &[0, 1], Logits::Want), Err(BatchError::SeqIdCount { got: 2, max: 1 }));
    assert_eq!(b.add(Token(1), 0, &[beyond], Logits::Want), Err(BatchError::SeqIdTooLarge(beyond)));
    b.add(Token(1), 0, &[5], Logits::Want).unwrap();
    assert_eq!(ctx.decode(&b), Err(DecodeError::InvalidSeqId { seq: 5, n_seq_max: 1 }));
}

#[test]
fn logits_exist_only_where_requested() {
    let model = smollm2();
    let mut ctx = model.context(small_ctx()).unwrap();
    assert!(ctx.logits(Output::At(0)).is_none());
    let tokens = model.vocab().tokenize("Hello there", AddSpecial::Yes).unwrap();
    let mut batch = Batch::new(16, 1);
    batch.add_sequence(&tokens, 0, 0, Logits::Want).unwrap();
    ctx.decode(&batch).unwrap();
    let last = tokens.len() - 1;
    assert_eq!(ctx.logits(Output::At(last)).map(<[f32]>::len), Some(49152));
    assert_eq!(ctx.logits(Output::Last), ctx.logits(Output::At(last)));
    assert!(ctx.logits(Output::At(0)).is_none());
    assert!(ctx.logits(Output::At(100)).is_none());
    assert_eq!(Sampler::greedy().sample(&ctx, Output::At(0)), Err(SampleError::NoLogits(Output::At(0))));
    assert_eq!(Sampler::chain().sample(&ctx, Output::Last), Err(SampleError::EmptyChain));
}

#[test]
fn full_context_is_an_error_not_a_crash() {
    let model = smollm2();
    let mut ctx = model.context(small_ctx().n_ctx(256).n_batch(256)).unwrap();
    let n_ctx = ctx.n_ctx();
    let mut batch = Batch::new(256, 1);
    let mut pos = 0;
    let mut result = Ok(());
    while result.is_ok() && pos <= n_ctx {
        batch.clear();
        batch.add_sequence(&vec![Token(1); 64], pos, 0, Logits::Want).unwrap();
        result = ctx.decode(&batch);
        pos += 64;
    }
    assert_eq!(result, Err(DecodeError::NoKvSlot));
    ctx.clear_kv();
    batch.clear();
    batch.add_sequence(&[Token(1), Token(2)], 0, 0, Logits::Want).unwrap();
    ctx.decode(&batch).unwrap();
}

#[test]
fn chat_template_renders_chatml() {
    let prompt = smollm2()
        .apply_chat_template(&[ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")], true)
        .unwrap();
    assert!(prompt.contains("<|im_start|>user\nHi<|im_end|>"), "{prompt}");
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt}");
}

#[test]
fn bad_files_are_errors() {
    let dir = std::env::temp_dir().join(format!("llama-bad-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(matches!(Model::load(dir.join("missing.gguf")), Err(LoadError::Io { .. })));

    let text = dir.join("text.gguf");
    std::fs::write(&text, "definitely not a model").unwrap();
    assert!(matches!(Model::load(&text), Err(LoadError::NotGguf(_))));

    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(Model::load(&empty), Err(LoadError::NotGguf(_))));

    // A real header cut short: the Rust validation refuses it, and so does llama.cpp without it.
    let real = std::fs::read(common::models::default_model().unwrap()).unwrap();
    for cut in [8, 24, 4096, 1 << 20] {
        let truncated = dir.join(format!("truncated-{cut}.gguf"));
        std::fs::write(&truncated, &real[..cut]).unwrap();
        match Model::load(&truncated) {
            Err(LoadError::Malformed { what, .. }) => assert!(!what.is_empty()),
            other => panic!("cut at {cut}: {other:?}"),
        }
        match Model::builder(&truncated).validate(false).load() {
            Err(LoadError::Rejected { reason, .. }) => assert!(!reason.is_empty(), "llama.cpp's reason is kept"),
            other => panic!("cut at {cut}, unvalidated: {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn progress_callback_can_cancel_and_panics_are_caught() {
    let path = common::models::default_model().unwrap();
    let mut calls = 0;
    let r = Model::builder(&path)
        .progress(|_| {
            calls += 1;
            false
        })
        .load();
    assert!(matches!(r, Err(LoadError::Cancelled)));
    assert!(calls >= 1);

    let r = Model::builder(&path).progress(|_| panic!("boom")).load();
    assert!(matches!(r, Err(LoadError::CallbackPanicked(message)) if message == "boom"));

    let mut last = 0.0;
    Model::builder(&path)
        .progress(|p| {
            last = p;
            true
        })
        .load()
        .unwrap();
    assert_eq!(last, 1.0);
}

#[test]
fn contexts_on_threads_share_one_model() {
    let (expected, _) = greedy("Rust is a language that", 8);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let model = smollm2().clone();
            std::thread::spawn(move || greedy_on(&model, "Rust is a language that", 8).0)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), expected);
    }
}
