//! Images and audio through `llama::media` on the default model with tiny random projectors
//! the tests generate (`common::projector`): the whole path runs (load, decode, tokenize,
//! encode, decode the embeddings, sample) though the answers mean nothing.

#![cfg(feature = "mtmd")]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::projector::{bmp, tiny_audio_projector, tiny_vision_projector, wav, AUDIO_TOKENS, IMAGE_TOKENS};
use common::{scratch, smollm2};
use llama::media::{ChunkKind, MediaError, MediaKind, Projector};
use llama::{AddSpecial, ContextParams, LoadError, Output, Sampler};

const N_EMBD: u32 = 576;

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch("media").join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn vision_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| write("vision.gguf", &tiny_vision_projector(N_EMBD).bytes()))
}

fn audio_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| write("audio.gguf", &tiny_audio_projector(N_EMBD).bytes()))
}

fn vision() -> Projector {
    Projector::builder(vision_path()).n_threads(1).load(smollm2()).unwrap()
}

#[test]
fn an_image_runs_the_whole_path_and_the_ledger_names_it() {
    let projector = vision();
    assert!(projector.takes_images() && !projector.takes_audio());
    assert_eq!(projector.audio_sample_rate(), None);
    let image = projector.media_from_bytes(&bmp(40, 30, 0)).unwrap();
    assert_eq!((image.kind(), image.width(), image.height()), (MediaKind::Image, 40, 30));
    assert_eq!(image.id().len(), 64, "a hex SHA-256: {}", image.id());

    let prompt = format!("Describe this picture: {} in one word.", projector.marker());
    let chunks = projector.tokenize(&prompt, &[&image], AddSpecial::Yes).unwrap();
    let kinds: Vec<ChunkKind> = chunks.iter().map(|c| c.kind()).collect();
    assert_eq!(kinds, [ChunkKind::Text, ChunkKind::Image, ChunkKind::Text]);
    let media = chunks.get(1).unwrap();
    assert_eq!((media.n_tokens(), media.n_pos()), (IMAGE_TOKENS, IMAGE_TOKENS));
    assert_eq!(media.media_id(), Some(image.id()));
    assert!(media.tokens().is_none() && chunks.get(0).unwrap().tokens().is_some_and(|t| !t.is_empty()));

    let mut ctx = smollm2().context(ContextParams::default().n_ctx(256).n_seq_max(2).n_threads(1)).unwrap();
    let end = projector.eval(&mut ctx, &chunks, 0, 0).unwrap();
    assert_eq!(end, chunks.n_pos());
    assert_eq!(ctx.kv_seq_pos_max(0).unwrap(), Some(end - 1));
    let token = Sampler::greedy().sample(&ctx, Output::Last).unwrap();
    assert!((token.0 as usize) < smollm2().vocab().n_tokens());

    // The ledger holds the text tokens and, where the image is, placeholders no vocabulary has.
    let cached = ctx.cached_tokens(0).unwrap().to_vec();
    assert_eq!(cached.len(), end);
    let first = chunks.get(0).unwrap().n_tokens();
    assert_eq!(&cached[..first], chunks.get(0).unwrap().tokens().unwrap());
    assert!(cached[first..first + IMAGE_TOKENS].iter().all(|t| t.0 < 0));
    assert!(cached[first + IMAGE_TOKENS..].iter().all(|t| t.0 >= 0));

    // The same picture again gives the same placeholders; another picture, others.
    let again = projector.media_from_bytes(&bmp(40, 30, 0)).unwrap();
    let other = projector.media_from_bytes(&bmp(40, 30, 1)).unwrap();
    assert_eq!(again.id(), image.id());
    assert_ne!(other.id(), image.id());
    for (media, same) in [(&again, true), (&other, false)] {
        let chunks = projector.tokenize(&prompt, &[media], AddSpecial::Yes).unwrap();
        projector.eval(&mut ctx, &chunks, 0, 1).unwrap();
        assert_eq!(ctx.cached_tokens(1).unwrap() == cached, same);
        ctx.kv_seq_rm(1, ..).unwrap();
    }
}

#[test]
fn raw_pixels_and_two_images_in_one_prompt() {
    let projector = vision();
    let pixels: Vec<u8> = (0..32 * 32 * 3).map(|i| (i % 251) as u8).collect();
    let a = llama::media::Media::rgb(32, 32, &pixels).unwrap();
    let b = llama::media::Media::rgb(32, 32, &pixels).unwrap();
    assert_eq!(a.id(), b.id());
    assert_ne!(a.id(), llama::media::Media::rgb(16, 64, &pixels).unwrap().id(), "the size is part of the id");
    let m = projector.marker().to_string();
    let chunks = projector.tokenize(&format!("A {m} and B {m}, which?"), &[&a, &b], AddSpecial::Yes).unwrap();
    assert_eq!(chunks.iter().filter(|c| c.kind() == ChunkKind::Image).count(), 2);
    assert_eq!(chunks.n_tokens(), chunks.n_pos());
    let mut ctx = smollm2().context(ContextParams::default().n_ctx(256).n_threads(1)).unwrap();
    assert_eq!(projector.eval(&mut ctx, &chunks, 0, 0).unwrap(), chunks.n_pos());
    Sampler::greedy().sample(&ctx, Output::Last).unwrap();
}

#[test]
fn audio_runs_the_whole_path() {
    let projector = Projector::builder(audio_path()).n_threads(1).load(smollm2()).unwrap();
    assert!(projector.takes_audio() && !projector.takes_images());
    assert_eq!(projector.audio_sample_rate(), Some(16_000));
    // An 8 kHz file is resampled to the projector's rate.
    let clip = projector.media_from_bytes(&wav(8_000, 1.0)).unwrap();
    assert_eq!(clip.kind(), MediaKind::Audio);
    assert_eq!(clip.n_samples(), 16_000);
    let chunks = projector.tokenize(&format!("Transcribe: {}", projector.marker()), &[&clip], AddSpecial::Yes).unwrap();
    let audio = chunks.iter().find(|c| c.kind() == ChunkKind::Audio).unwrap();
    assert_eq!(audio.n_tokens(), AUDIO_TOKENS);
    let mut ctx = smollm2().context(ContextParams::default().n_ctx(512).n_threads(1)).unwrap();
    // The prompt ends with the clip: nothing to sample from yet, so add text after it.
    let end = projector.eval(&mut ctx, &chunks, 0, 0).unwrap();
    assert_eq!(end, chunks.n_pos());
    ctx.decode_tokens(&smollm2().vocab().tokenize(" Answer:", AddSpecial::No).unwrap(), end, 0).unwrap();
    Sampler::greedy().sample(&ctx, Output::Last).unwrap();

    // Too short for the preprocessor, or declaring hours in its header: refused before mtmd.
    let err = projector.media_from_bytes(&wav(16_000, 0.05)).unwrap_err();
    assert!(matches!(&err, MediaError::Invalid(m) if m.contains("too short")), "{err:?}");
    let mut endless = wav(16_000, 0.5);
    endless[40..44].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let err = projector.media_from_bytes(&endless).unwrap_err();
    assert!(matches!(&err, MediaError::Invalid(m) if m.contains("longer than")), "{err:?}");

    let pcm: Vec<f32> = (0..4000).map(|i| (i as f32 * 0.01).sin() * 0.3).collect();
    let raw = llama::media::Media::pcm(&pcm).unwrap();
    assert_eq!((raw.kind(), raw.n_samples()), (MediaKind::Audio, 4000));
}

#[test]
fn bad_media_and_prompts_are_errors() {
    let projector = vision();
    // stb_image reads a truncated BMP's missing pixels as zeros: no case of it here.
    let good = bmp(8, 8, 0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"hello, not an image".to_vec()),
        ("png signature only", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec()),
        ("webp", [b"RIFF".as_slice(), &[0; 4], b"WEBPVP8 "].concat()),
    ];
    for (what, bytes) in cases {
        let err = projector.media_from_bytes(&bytes).unwrap_err();
        assert!(matches!(err, MediaError::Undecodable(_)), "{what}: {err:?}");
    }
    // A header claiming 100000 × 100000 pixels is refused before any pixel is decoded.
    let mut bomb = bmp(8, 8, 0);
    bomb[18..22].copy_from_slice(&100_000u32.to_le_bytes());
    bomb[22..26].copy_from_slice(&100_000u32.to_le_bytes());
    let err = projector.media_from_bytes(&bomb).unwrap_err();
    assert!(matches!(err, MediaError::TooLarge { width: 100_000, height: 100_000, .. }), "{err:?}");

    // Audio for a vision-only projector.
    let err = projector.media_from_bytes(&wav(16_000, 0.5)).unwrap_err();
    assert!(matches!(err, MediaError::Unsupported(MediaKind::Audio)), "{err:?}");
    let clip = llama::media::Media::pcm(&[0.0; 100]).unwrap();
    let err = projector.tokenize(projector.marker(), &[&clip], AddSpecial::Yes).unwrap_err();
    assert!(matches!(err, MediaError::Unsupported(MediaKind::Audio)), "{err:?}");

    // Raw media of the wrong size.
    assert!(matches!(llama::media::Media::rgb(4, 4, &[0; 47]), Err(MediaError::Invalid(_))));
    assert!(matches!(llama::media::Media::rgb(0, 4, &[]), Err(MediaError::Invalid(_))));
    assert!(matches!(llama::media::Media::pcm(&[0.5]), Err(MediaError::Invalid(_))));

    // Markers and media that do not pair up; a NUL in the prompt.
    let image = projector.media_from_bytes(&good).unwrap();
    let m = projector.marker();
    for (prompt, media) in [(format!("{m}{m}"), vec![&image]), ("none".into(), vec![&image]), (m.into(), vec![])] {
        let err = projector.tokenize(&prompt, &media, AddSpecial::Yes).unwrap_err();
        assert!(matches!(err, MediaError::MarkerCount { .. }), "{prompt}: {err:?}");
    }
    assert!(matches!(projector.tokenize(&format!("a\0{m}"), &[&image], AddSpecial::Yes), Err(MediaError::Nul)));
}

#[test]
fn evaluating_refuses_what_cannot_fit_or_belongs_elsewhere() {
    let projector = vision();
    let image = projector.media_from_bytes(&bmp(8, 8, 0)).unwrap();
    let chunks = projector.tokenize(&format!("{} what?", projector.marker()), &[&image], AddSpecial::Yes).unwrap();
    let mut ctx = smollm2().context(ContextParams::default().n_ctx(256).n_seq_max(2).n_threads(1)).unwrap();
    let n_ctx = ctx.n_ctx();
    let err = projector.eval(&mut ctx, &chunks, n_ctx - 5, 0).unwrap_err();
    assert!(matches!(err, MediaError::ContextFull { need, .. } if need == n_ctx - 5 + chunks.n_pos()), "{err:?}");
    let err = projector.eval(&mut ctx, &chunks, 0, 2).unwrap_err();
    assert!(matches!(err, MediaError::Decode(llama::DecodeError::InvalidSeqId { seq: 2, .. })), "{err:?}");
    assert_eq!(ctx.kv_seq_pos_max(0).unwrap(), None, "nothing was decoded");

    // Chunks of another projector (another instance of the same file, even) do not fit this one.
    let another = vision();
    let err = another.eval(&mut ctx, &chunks, 0, 0).unwrap_err();
    assert!(matches!(&err, MediaError::Invalid(m) if m.contains("another projector")), "{err:?}");

    let other = common::gemma3();
    let mut other_ctx = other.context(ContextParams::default().n_ctx(256).n_threads(1)).unwrap();
    let err = projector.eval(&mut other_ctx, &chunks, 0, 0).unwrap_err();
    assert!(matches!(err, MediaError::Invalid(_)), "{err:?}");
}

#[test]
fn bad_projectors_are_errors_naming_the_cause() {
    // Made for a text model 64 wide: llama.cpp names both widths.
    let narrow = write("narrow.gguf", &tiny_vision_projector(64).bytes());
    let err = Projector::load(smollm2(), &narrow).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MediaError::Rejected { .. }) && text.contains("576") && text.contains("64"), "{text}");

    let bytes = tiny_vision_projector(N_EMBD).bytes();
    let truncated = write("truncated.gguf", &bytes[..bytes.len() / 3]);
    let err = Projector::load(smollm2(), &truncated).unwrap_err();
    assert!(matches!(err, MediaError::Load(LoadError::Malformed { .. })), "{err:?}");
    let err = Projector::load(smollm2(), write("garbage.gguf", b"not a gguf at all")).unwrap_err();
    assert!(matches!(err, MediaError::Load(LoadError::NotGguf(_))), "{err:?}");
    let err = Projector::load(smollm2(), scratch("media").join("missing.gguf")).unwrap_err();
    assert!(matches!(err, MediaError::Load(LoadError::Io { .. })), "{err:?}");
    // A text model is a GGUF but no projector.
    let err = Projector::load(smollm2(), common::models::default_model().unwrap()).unwrap_err();
    assert!(matches!(err, MediaError::Load(LoadError::Malformed { .. })), "{err:?}");
    assert_eq!(Projector::probe(vision_path()).unwrap(), (true, false));
    // What validation adds to a load (printed for the record, not asserted: timings vary).
    let t = std::time::Instant::now();
    Projector::probe(vision_path()).unwrap();
    let probe = t.elapsed();
    let t = std::time::Instant::now();
    drop(vision());
    eprintln!("projector validation {probe:?} of a whole load {:?}", t.elapsed());
    assert_eq!(Projector::probe(audio_path()).unwrap(), (false, true));
}

mod engine {
    use super::*;
    use llama::engine::{Engine, EngineParams, Event, Request, SubmitError};
    use llama::{ChatMessage, GenerateParams};

    /// One slot: a new conversation reuses what the last one left, however little.
    fn engine() -> Engine {
        let params = EngineParams::default().slots(1).n_ctx(1024).threads(1).projector(vision());
        Engine::new(smollm2(), params).unwrap()
    }

    /// The text, and (prompt, cached) tokens of one greedy request.
    fn run(engine: &Engine, request: Request) -> (String, usize, usize) {
        let completion = engine.submit(request.params(GenerateParams::default().max_tokens(12))).unwrap();
        let (mut text, mut counts) = (String::new(), (0, 0));
        for event in completion {
            match event {
                Event::Started { prompt_tokens, cached_tokens } => counts = (prompt_tokens, cached_tokens),
                Event::Piece { piece, .. } => text.push_str(&piece.text),
                Event::Error { message, .. } => panic!("{message}"),
                _ => {}
            }
        }
        (text, counts.0, counts.1)
    }

    fn ask(engine: &Engine, seed: u8) -> Request {
        let marker = engine.handle().media_marker().unwrap().to_string();
        let projector = engine.handle();
        let image = projector.projector().unwrap().media_from_bytes(&bmp(24, 24, seed)).unwrap();
        let message = ChatMessage::new("user", format!("Look: {marker} What colour is it?"));
        Request::new(vec![message]).media(vec![image])
    }

    #[test]
    fn a_chat_with_an_image_is_served_and_its_prefix_reused_only_for_the_same_image() {
        let engine = engine();
        let tokens = engine.handle().tokenize(&ask(&engine, 0)).unwrap();
        let image_at = tokens.iter().position(|t| t.0 < 0).unwrap();
        assert_eq!(tokens.iter().filter(|t| t.0 < 0).count(), IMAGE_TOKENS);

        let (first, prompt, cached) = run(&engine, ask(&engine, 0));
        assert_eq!((prompt, cached), (tokens.len(), 0));
        assert!(!first.is_empty());
        // The same picture again: all but the last token come from the cache, and the reply
        // is the same.
        let (again, _, cached) = run(&engine, ask(&engine, 0));
        assert_eq!(cached, tokens.len() - 1);
        assert_eq!(again, first);
        // Another picture: the cache serves the text before it, not its positions.
        let (_, _, cached) = run(&engine, ask(&engine, 1));
        assert_eq!(cached, image_at);
        assert!(engine.metrics().media_read >= 2);
    }

    #[test]
    fn media_requests_that_cannot_be_served_are_refused_at_submission() {
        let engine = engine();
        let handle = engine.handle();
        let marker = handle.media_marker().unwrap().to_string();
        let image = || handle.projector().unwrap().media_from_bytes(&bmp(8, 8, 0)).unwrap();
        let refused = |request: Request, what: &str| match engine.submit(request) {
            Err(SubmitError::Invalid(message)) => assert!(message.contains(what), "{message}"),
            other => panic!("{other:?}"),
        };
        refused(Request::new("no marker here").media(vec![image()]), "markers");
        refused(Request::new(format!("two {marker} {marker}")).media(vec![image()]), "markers");
        refused(Request::new(format!("ends with {marker}")).media(vec![image()]), "must not end");
        refused(Request::new(vec![llama::Token(1)]).media(vec![image()]), "text or chat");

        let plain = Engine::new(smollm2(), EngineParams::default().slots(1).n_ctx(256).threads(1)).unwrap();
        assert!(plain.handle().media_marker().is_none());
        match plain.submit(Request::new(format!("{marker} hi")).media(vec![image()])) {
            Err(SubmitError::Invalid(message)) => assert!(message.contains("projector"), "{message}"),
            other => panic!("{other:?}"),
        }
        // A projector for another model is refused when the engine starts.
        let other = Projector::builder(vision_path()).n_threads(1).load(common::gemma3());
        assert!(other.is_err(), "gemma-3 is 640 wide: the 576-wide projector does not fit it");
    }
}

#[cfg(feature = "server")]
mod server_support {
    use super::*;
    use axum::body::Body;
    use axum::http::{header, Method, Request, StatusCode};
    use serde_json::Value;
    use tower::ServiceExt;

    pub fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
            }
        }
        out
    }

    pub fn router() -> axum::Router {
        let model = common::models::default_model().unwrap();
        llama::server::Server::builder()
            .model("seeing", &model)
            .projector("seeing", vision_path())
            .model("blind", &model)
            .model("hearing", &model)
            .projector("hearing", audio_path())
            .parallel(1)
            .ctx(1024)
            .threads(1)
            .build()
            .unwrap()
            .router()
    }

    pub async fn call(app: &axum::Router, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(if body.is_null() { Body::empty() } else { Body::from(body.to_string()) })
            .unwrap();
        let response = app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

#[cfg(feature = "server")]
mod server {
    use super::server_support::*;
    use super::*;
    use axum::http::{Method, StatusCode};
    use serde_json::{json, Value};

    fn chat(model: &str, parts: Value) -> Value {
        json!({"model": model, "max_tokens": 6, "messages": [{"role": "user", "content": parts}]})
    }

    fn image_part(url: String) -> Value {
        json!({"type": "image_url", "image_url": {"url": url}})
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openai_image_parts_are_read_and_what_cannot_be_is_a_400() {
        let app = router();
        let picture = format!("data:image/bmp;base64,{}", base64(&bmp(24, 24, 0)));
        let ask = json!([{"type": "text", "text": "What is in this picture?"}, image_part(picture.clone())]);
        let (status, body) = call(&app, Method::POST, "/v1/chat/completions", chat("seeing", ask)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let prompt_tokens = body["usage"]["prompt_tokens"].as_u64().unwrap();
        assert!(prompt_tokens as usize > IMAGE_TOKENS, "{body}");

        let (_, models) = call(&app, Method::GET, "/v1/models", Value::Null).await;
        let caps = |name: &str| {
            let card = models["data"].as_array().unwrap().iter().find(|m| m["id"] == name).unwrap().clone();
            card["capabilities"].clone()
        };
        assert_eq!(caps("seeing"), json!(["completion", "vision"]));
        assert_eq!(caps("blind"), json!(["completion"]));
        assert_eq!(caps("hearing"), json!(["completion", "audio"]));

        let refused = [
            ("seeing", json!([image_part("https://example.com/cat.png".into())]), "not fetched"),
            ("seeing", json!([image_part("data:image/png;base64,***".into())]), "base64"),
            ("seeing", json!([image_part(format!("data:image/png;base64,{}", base64(b"not an image")))]), "decode"),
            (
                "seeing",
                json!([{"type": "input_audio", "input_audio": {"data": base64(&wav(16_000, 0.2)), "format": "wav"}}]),
                "audio",
            ),
            ("seeing", json!([{"type": "image_url"}]), "needs `image_url`"),
            ("blind", json!([image_part(picture.clone())]), "without a projector"),
            // 70 images of 16 positions each: more than the 1,024-token context holds.
            ("seeing", Value::Array(vec![image_part(picture.clone()); 70]), "context"),
        ];
        for (model, parts, what) in refused {
            let (status, body) = call(&app, Method::POST, "/v1/chat/completions", chat(model, parts.clone())).await;
            let message = body["error"]["message"].as_str().unwrap_or_default().to_string();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{parts}: {body}");
            assert!(message.contains(what), "{what}: {message}");
        }
        // Audio, for the model whose projector takes it.
        let clip = json!([{"type": "text", "text": "Transcribe:"},
            {"type": "input_audio", "input_audio": {"data": base64(&wav(16_000, 0.5)), "format": "wav"}}]);
        let (status, body) = call(&app, Method::POST, "/v1/chat/completions", chat("hearing", clip)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() as usize > AUDIO_TOKENS, "{body}");
        // An image in an assistant message is refused too.
        let body = json!({"model": "seeing", "messages": [
            {"role": "assistant", "content": [image_part(picture)]}, {"role": "user", "content": "and?"}]});
        let (status, _) = call(&app, Method::POST, "/v1/chat/completions", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, health) = call(&app, Method::GET, "/health", Value::Null).await;
        assert_eq!(status, StatusCode::OK, "the server stays healthy: {health}");
    }

    #[test]
    fn a_projector_for_no_served_model_or_not_a_projector_stops_the_build() {
        let model = common::models::default_model().unwrap();
        let build = |projector_for: &str, path: &std::path::Path| {
            llama::server::Server::builder().model("m", &model).projector(projector_for, path).build()
        };
        let err = build("other", vision_path()).unwrap_err().to_string();
        assert!(err.contains("no model of that name"), "{err}");
        let err = build("m", &model).unwrap_err().to_string();
        assert!(err.contains("not a multimodal projector"), "{err}");
    }
}

#[cfg(feature = "server")]
mod protocols {
    use super::server_support::*;
    use super::*;
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    /// The same picture through each protocol's own image field: every route reads it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn anthropic_ollama_and_responses_images_are_read() {
        let app = router();
        let b64 = base64(&bmp(24, 24, 3));
        let asks = [
            (
                "/v1/messages",
                json!({"model": "seeing", "max_tokens": 4, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": b64}},
                {"type": "text", "text": "What is this?"}]}]}),
                "/usage/input_tokens",
            ),
            (
                "/api/chat",
                json!({"model": "seeing", "stream": false, "options": {"num_predict": 4},
                "messages": [{"role": "user", "content": "What is this?", "images": [b64]}]}),
                "/prompt_eval_count",
            ),
            (
                "/api/generate",
                json!({"model": "seeing", "stream": false, "options": {"num_predict": 4},
                "prompt": "What is this?", "images": [b64]}),
                "/prompt_eval_count",
            ),
            (
                "/v1/responses",
                json!({"model": "seeing", "max_output_tokens": 4, "input": [{"role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": format!("data:image/bmp;base64,{b64}")}]}]}),
                "/usage/input_tokens",
            ),
        ];
        for (path, body, tokens) in asks {
            let (status, reply) = call(&app, Method::POST, path, body).await;
            assert_eq!(status, StatusCode::OK, "{path}: {reply}");
            let n = reply.pointer(tokens).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
            assert!(n > IMAGE_TOKENS, "{path}: {reply}");
        }
        let (status, reply) = call(&app, Method::POST, "/api/show", json!({"model": "seeing"})).await;
        assert_eq!(status, StatusCode::OK);
        assert!(reply["capabilities"].as_array().unwrap().contains(&json!("vision")), "{reply}");
        // Images with no prompt to go with are refused, not dropped unread.
        let (status, reply) =
            call(&app, Method::POST, "/api/generate", json!({"model": "seeing", "images": [b64.clone()]})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        // A URL source is refused, not fetched.
        let url = json!({"model": "seeing", "max_tokens": 4, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]}]});
        let (status, reply) = call(&app, Method::POST, "/v1/messages", url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    }
}
