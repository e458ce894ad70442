//! The fuzz targets' bodies: each takes libFuzzer's input and may refuse it, never crash.
//! The `fuzz_targets/` wrappers hand them to libFuzzer; `llama/tests/fuzz_replay.rs` runs the
//! committed seeds (and any local corpus) through them in the ordinary test suite.

use std::cell::RefCell;

use llama::Logits;
use llama::{
    AddSpecial, Batch, ChatMessage, ChatTemplate, Context, ContextParams, ControlText, GenerateParams, Model, Sampler,
    SpecialSyntax, Token, TokenDataArray, Utf8Decoder,
};

/// Arbitrary bytes as a model file: the Rust GGUF validation, then llama.cpp's loader for what
/// passes it (vocabulary only, then everything), then a context and one decoded token for what
/// loads. Any of these may refuse; none may crash.
pub fn gguf(data: &[u8]) {
    let path = super::scratch_file("model.gguf");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = Model::builder(&path).vocab_only(true).load();
    let Ok(model) = Model::builder(&path).load() else { return };
    let Ok(mut ctx) = model.context(ContextParams::default().n_ctx(16).n_batch(16).n_threads(1)) else { return };
    let mut batch = Batch::new(1, 1);
    if batch.add(Token(0), 0, &[0], Logits::Want).is_ok() {
        let _ = ctx.decode(&batch);
    }
}

/// Whether the vocabulary has a token for the lone byte `b`.
fn byte_has_token(b: u8) -> bool {
    static TABLE: std::sync::OnceLock<[bool; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let vocab = super::vocab_model().vocab();
        let mut table = [false; 256];
        for token in vocab.tokens() {
            if let Ok([b]) = vocab.token_to_bytes(token, ControlText::Hide).as_deref() {
                table[*b as usize] = true;
            }
        }
        table
    })[b as usize]
}

/// Arbitrary text through the default model's tokenizer: ids stay in the vocabulary, plain text
/// round-trips, and arbitrary ids detokenize or are refused. The first byte picks the flags.
pub fn tokenize(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let vocab = super::vocab_model().vocab();
    let text = String::from_utf8_lossy(rest);
    let add_special = if flags & 1 != 0 { AddSpecial::Yes } else { AddSpecial::No };
    let syntax = if flags & 2 != 0 { SpecialSyntax::Tokens } else { SpecialSyntax::Text };
    let tokens = vocab.tokenize_with(&text, add_special, syntax).expect("valid text tokenizes");
    assert!(tokens.iter().all(|&t| vocab.check(t).is_ok()), "an id outside the vocabulary");
    if (add_special, syntax) == (AddSpecial::No, SpecialSyntax::Text) {
        // Bytes the vocabulary has no token for are dropped (see `Vocab::tokenize`).
        let kept: Vec<u8> = text.bytes().filter(|&b| byte_has_token(b)).collect();
        let kept = String::from_utf8_lossy(&kept);
        assert_eq!(vocab.detokenize(&tokens).expect("own ids detokenize"), kept, "round trip");
    }
    let mut decoder = Utf8Decoder::default();
    for &t in tokens.iter().take(64) {
        let control = if flags & 4 != 0 { ControlText::Show } else { ControlText::Hide };
        let _ = decoder.push(&vocab.token_to_bytes(t, control).expect("own ids render"));
    }
    let _ = decoder.finish();

    let ids: Vec<Token> = rest.chunks_exact(4).map(|c| Token(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect();
    let _ = vocab.detokenize(&ids);
    for &t in ids.iter().take(16) {
        let _ = vocab.token_to_bytes(t, ControlText::Show);
        let _ = vocab.text(t);
        let _ = (vocab.is_eog(t), vocab.is_control(t));
    }
}

/// Arbitrary GBNF through `Sampler::grammar` on the real vocabulary; a grammar that parses is
/// then driven for a few tokens over the first 256 ids (mostly single characters).
pub fn grammar(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let model = super::vocab_model();
    let Ok(mut sampler) = Sampler::chain().grammar(model, text, "root").map(|s| s.greedy_pick()) else { return };
    let logits: Vec<f32> = (0..256).map(|i| ((i * 37) % 11) as f32).collect();
    for _ in 0..8 {
        let mut candidates = TokenDataArray::from_logits(&logits);
        if sampler.apply(&mut candidates).is_err() {
            break;
        }
        let Some(pick) = candidates.selected().filter(|t| t.logit.is_finite()).map(|t| t.id) else { break };
        if sampler.accept(pick).is_err() {
            break;
        }
    }
}

/// Arbitrary JSON as a JSON Schema: conversion refuses or returns a grammar, and every grammar
/// it returns must parse in llama.cpp.
pub fn json_schema(data: &[u8]) {
    let Ok(schema) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(gbnf) = llama::json_schema_to_grammar(&schema) else { return };
    match Sampler::chain().grammar(super::vocab_model(), &gbnf, "root") {
        Ok(_) => {}
        Err(e) => panic!("grammar from {schema} does not parse: {e}\n{gbnf}"),
    }
}

/// Hostile Jinja chat templates: rendering a conversation (and rendering it to tokens, which
/// renders twice and splits around the message contents) refuses or returns text. The input is
/// the template, optionally followed by a NUL and the user's message.
pub fn chat_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (source, content) = text.split_once('\0').unwrap_or((&text, "What is 2+2?"));
    let template = ChatTemplate::new(source, "<|im_start|>", "<|im_end|>");
    let messages = [
        ChatMessage::system("Be brief."),
        ChatMessage::user(content),
        ChatMessage::assistant("4."),
        ChatMessage::user(content),
    ];
    let _ = template.render(&messages, true);
    let _ = template.render_tokens(&super::vocab_model().vocab(), &messages, true);
}

thread_local! {
    static CTX: RefCell<Context> = RefCell::new(
        super::full_model()
            .context(ContextParams::default().n_ctx(64).n_batch(64).n_seq_max(2).n_threads(1))
            .unwrap_or_else(|e| panic!("context: {e}")),
    );
}

fn decode_next(ctx: &mut Context, seq: usize) {
    let next = ctx.kv_seq_pos_max(seq).ok().flatten().map_or(Some(0), |p| p.checked_add(1));
    let mut batch = Batch::new(1, 1);
    if let Some(pos) = next {
        if batch.add(Token(1), pos, &[seq], Logits::Want).is_ok() {
            let _ = ctx.decode(&batch);
        }
    }
}

/// Arbitrary bytes as saved context state, whole and per sequence: refused, or loaded into a
/// cache that the next decode can use.
pub fn state(data: &[u8]) {
    CTX.with_borrow_mut(|ctx| {
        if ctx.load_state(data).is_ok() {
            decode_next(ctx, 0);
        }
        ctx.clear_kv();
        if ctx.load_seq_state(1, data).is_ok() {
            decode_next(ctx, 1);
        }
        ctx.clear_kv();
    });
}

/// A real model with its metadata and tensor infos edited (see `mutate.rs`; the first byte
/// picks Gemma-3 when its two low bits are set, else SmolLM2, whose loads take a fifth of
/// the time), written again with the same tensor data, then loaded, its chat template
/// rendered, and a few tokens generated. Any step may refuse; none may crash.
pub fn metadata(data: &[u8]) {
    let Some((&which, edits)) = data.split_first() else { return };
    let mut model = super::real_model(which & 3 == 3).clone();
    super::mutate::apply(&mut model, edits);
    let path = super::scratch_file("metadata.gguf");
    let written = std::fs::File::create(&path).and_then(|f| {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
        model.write_to(&mut out)?;
        std::io::Write::flush(&mut out)
    });
    if written.is_err() {
        return;
    }
    let Ok(model) = Model::load(&path) else { return };
    let messages = [ChatMessage::system("Be brief."), ChatMessage::user("Hi")];
    let _ = model.apply_chat_template(&messages, true);
    let prompt =
        ChatTemplate::from_model(&model).and_then(|t| t.render(&messages, true)).unwrap_or_else(|_| "Hi".into());
    let Ok(mut ctx) = model.context(ContextParams::default().n_ctx(64).n_batch(64).n_threads(1)) else { return };
    let mut sampler = Sampler::greedy();
    let params = GenerateParams::default().max_tokens(3).special_syntax(SpecialSyntax::Tokens);
    if let Ok(pieces) = ctx.generate(&prompt, &mut sampler, &params) {
        pieces.take(3).for_each(drop);
    }
}

/// Bytes as media through the safe API: the first byte picks the projector (vision or audio)
/// and whether the rest is an encoded file or raw RGB (a width byte, then pixels). What decodes
/// is tokenized in a prompt and evaluated into a context, then sampled from; what does not is an
/// error, never an abort.
#[cfg(feature = "mtmd")]
pub fn media(data: &[u8]) {
    use llama::media::{Media, MediaError};
    let Some((&mode, rest)) = data.split_first() else { return };
    let projector = super::projector(mode & 1 != 0);
    let media = if mode & 2 == 0 {
        projector.media_from_bytes(rest)
    } else {
        let Some((&width, pixels)) = rest.split_first() else { return };
        let width = u32::from(width.max(1));
        let height = u32::try_from(pixels.len() / 3).unwrap_or(0) / width;
        Media::rgb(width, height, &pixels[..(width * height * 3) as usize])
    };
    let media = match media {
        Ok(m) => m,
        Err(
            MediaError::Undecodable(_)
            | MediaError::TooLarge { .. }
            | MediaError::Invalid(_)
            | MediaError::Unsupported(_),
        ) => return,
        Err(e) => panic!("unexpected error: {e}"),
    };
    let prompt = format!("Describe {} briefly.", projector.marker());
    let chunks = match projector.tokenize(&prompt, &[&media], AddSpecial::Yes) {
        Ok(c) => c,
        Err(MediaError::Unsupported(_)) => return,
        Err(e) => panic!("tokenizing a decoded medium: {e}"),
    };
    let params = llama::ContextParams::default().n_ctx(1024).n_threads(1);
    let mut ctx = super::full_model().context(params).expect("a context");
    let end = projector.eval(&mut ctx, &chunks, 0, 0).expect("a decoded medium evaluates");
    assert_eq!(end, chunks.n_pos());
    let _ = llama::Sampler::greedy().sample(&ctx, llama::Output::Last).expect("logits after the prompt");
}
