//! The router in-process: every endpoint and every error status, without sockets.

#[path = "../../../examples/common/models.rs"]
#[allow(dead_code)]
mod models;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::body::{self, BodyLimit};
use super::keep_alive::KeepAlive;
use super::metrics::HttpMetrics;
use super::registry::{EngineConfig, Registry};
use super::routes::{self, AppState};
use super::security::Guard;
use super::{generation, openai, ModelSpec};

/// One runtime for every test: the registries spawn their loading and expiry tasks on it, and
/// must outlive any one test.
pub(super) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

pub(super) fn config(parallel: usize, max_queue: usize) -> EngineConfig {
    EngineConfig {
        parallel,
        ctx: 1024,
        threads: Some(1),
        max_queue,
        cache_ram: 64 << 20,
        stall_timeout: None,
        ..EngineConfig::default()
    }
}

pub(super) fn spec(name: &str) -> ModelSpec {
    ModelSpec { name: name.into(), path: models::default_model().unwrap(), projector: None, media: (false, false) }
}

pub(super) fn state(registry: Arc<Registry>, api_key: Option<&str>) -> AppState {
    AppState {
        registry,
        http: Arc::new(HttpMetrics::default()),
        body_limit: BodyLimit(1 << 20),
        api_key: api_key.map(Arc::from),
        guard: Arc::new(Guard::new(&[], &[])),
    }
}

/// The router most tests share: SmolLM2 as `smollm2`, 4 slots.
pub(super) fn shared() -> Router {
    static STATE: OnceLock<AppState> = OnceLock::new();
    let s = STATE.get_or_init(|| {
        let _guard = runtime().enter();
        let registry =
            Registry::new(vec![spec("smollm2")], config(4, 16), 3, KeepAlive::Forever, Duration::from_secs(60));
        state(registry, None)
    });
    routes::router(s.clone(), None)
}

pub(super) async fn send(app: &Router, method: Method, path: &str, body: impl Into<Body>) -> Response {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap();
    app.clone().oneshot(req).await.unwrap()
}

pub(super) async fn post(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    let r = send(app, Method::POST, path, body.to_string()).await;
    let status = r.status();
    (status, json_of(r).await)
}

pub(super) async fn get(app: &Router, path: &str) -> (StatusCode, String) {
    let r = send(app, Method::GET, path, Body::empty()).await;
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

pub(super) async fn json_of(r: Response) -> Value {
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// The `data:` payloads of an SSE body.
pub(super) async fn sse(r: Response) -> Vec<String> {
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .collect()
}

pub(super) fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// An OpenAI error body with exactly the four fields.
pub(super) fn assert_error(body: &Value, param: Option<&str>) {
    let e = &body["error"];
    let keys: Vec<&str> = e.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    assert_eq!(keys.len(), 4, "{body}");
    for k in ["message", "type", "param", "code"] {
        assert!(e.get(k).is_some(), "{k} missing: {body}");
    }
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{body}");
    }
}

#[test]
fn chat_completion_has_openai_shape() {
    runtime().block_on(async {
        let app = shared();
        let body = json!({"model": "smollm2", "messages": user("Say hello."), "max_tokens": 8, "temperature": 0,
                          "user": "tester", "some_future_field": {"x": 1}, "top_p": null});
        let (status, r) = post(&app, "/v1/chat/completions", body).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(r["object"], "chat.completion");
        assert_eq!(r["model"], "smollm2");
        assert!(r["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert!(r["created"].as_u64().unwrap() > 1_600_000_000);
        let choice = &r["choices"][0];
        assert_eq!(choice["index"], 0);
        assert_eq!(choice["message"]["role"], "assistant");
        assert!(!choice["message"]["content"].as_str().unwrap().is_empty());
        assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap()));
        let u = &r["usage"];
        assert!(u["completion_tokens"].as_u64().unwrap() <= 8);
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
        );
        assert!(u["prompt_tokens_details"]["cached_tokens"].is_u64());
    });
}

#[test]
fn content_parts_and_system_roles_are_accepted() {
    runtime().block_on(async {
        let app = shared();
        let messages = json!([
            {"role": "developer", "content": "Answer briefly."},
            {"role": "user", "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "color."}]},
        ]);
        let (status, r) =
            post(&app, "/v1/chat/completions", json!({"messages": messages, "max_completion_tokens": 4})).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert!(r["usage"]["completion_tokens"].as_u64().unwrap() <= 4);
    });
}

#[test]
fn chat_stream_sends_role_first_finish_last_then_usage_and_done() {
    runtime().block_on(async {
        let app = shared();
        let body = json!({"messages": user("Count to three."), "max_tokens": 6, "temperature": 0, "stream": true,
                          "stream_options": {"include_usage": true}});
        let r = send(&app, Method::POST, "/v1/chat/completions", body.to_string()).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/event-stream"));
        let data = sse(r).await;
        assert_eq!(data.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 6);
        let finish = &chunks[chunks.len() - 2]["choices"][0];
        assert_eq!(finish["finish_reason"], "length");
        assert!(chunks[..chunks.len() - 2].iter().all(|c| c["choices"][0]["finish_reason"].is_null()));
        assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()));

        // Without include_usage, no usage field and no usage chunk.
        let body = json!({"messages": user("Count to three."), "max_tokens": 3, "stream": true});
        let data = sse(send(&app, Method::POST, "/v1/chat/completions", body.to_string()).await).await;
        for d in &data[..data.len() - 1] {
            let c: Value = serde_json::from_str(d).unwrap();
            assert!(c.get("usage").is_none() && !c["choices"].as_array().unwrap().is_empty(), "{c}");
        }
    });
}

#[test]
fn text_completion_plain_streamed_and_with_logprobs() {
    runtime().block_on(async {
        let app = shared();
        let body = json!({"prompt": "1, 2, 3, 4,", "max_tokens": 16, "temperature": 0, "logprobs": 2, "stop": "8"});
        let (status, r) = post(&app, "/v1/completions", body).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(r["object"], "text_completion");
        assert!(r["id"].as_str().unwrap().starts_with("cmpl-"));
        let choice = &r["choices"][0];
        let text = choice["text"].as_str().unwrap();
        assert!(text.starts_with(" 5, 6, 7") && !text.contains('8'), "{text:?}");
        assert_eq!(choice["finish_reason"], "stop");
        let lp = &choice["logprobs"];
        let n = lp["tokens"].as_array().unwrap().len();
        assert!(n > 0 && lp["token_logprobs"].as_array().unwrap().len() == n, "{lp}");
        assert!(lp["top_logprobs"].as_array().unwrap().iter().all(|m| m.as_object().unwrap().len() <= 2));

        let body = json!({"prompt": [[16, 28, 17, 28]], "max_tokens": 4, "stream": true});
        let data = sse(send(&app, Method::POST, "/v1/completions", body.to_string()).await).await;
        assert_eq!(data.last().unwrap(), "[DONE]");
        let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        assert_eq!(last["object"], "text_completion");
        assert_eq!(last["choices"][0]["finish_reason"], "length");
    });
}

#[test]
fn chat_logprobs_n_choices_and_stop() {
    runtime().block_on(async {
        let app = shared();
        let body = json!({"messages": user("Hi"), "max_tokens": 3, "logprobs": true, "top_logprobs": 2});
        let (status, r) = post(&app, "/v1/chat/completions", body).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        let content = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
        assert_eq!(content.len() as u64, r["usage"]["completion_tokens"].as_u64().unwrap());
        for entry in content {
            assert!(entry["logprob"].as_f64().unwrap() <= 0.0 && entry["bytes"].is_array(), "{entry}");
            assert_eq!(entry["top_logprobs"].as_array().unwrap().len(), 2);
        }

        let body = json!({"messages": user("Name an animal."), "n": 3, "seed": 11, "temperature": 1.2,
                          "max_tokens": 5, "stop": ["\n", "."]});
        let (status, r) = post(&app, "/v1/chat/completions", body).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        let choices = r["choices"].as_array().unwrap();
        assert_eq!(choices.iter().map(|c| c["index"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1, 2]);
        for c in choices {
            let text = c["message"]["content"].as_str().unwrap();
            assert!(!text.contains('\n') && !text.contains('.'), "{text:?}");
        }
    });
}

#[test]
fn structured_output_follows_schema_json_and_grammar() {
    runtime().block_on(async {
        let app = shared();
        let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                            "additionalProperties": false});
        let messages = json!([{"role": "system", "content": "You output only JSON."},
                              {"role": "user", "content": "Is the sky blue? Answer as JSON with the key ok."}]);
        let body = json!({"messages": messages, "max_tokens": 32, "seed": 1,
                          "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}});
        let (status, r) = post(&app, "/v1/chat/completions", body).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(r["choices"][0]["finish_reason"], "stop", "{r}");
        let out: Value = serde_json::from_str(r["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
        assert!(out["ok"].is_boolean() && out.as_object().unwrap().len() == 1, "{out}");

        let body = json!({"messages": user("Yes or no?"), "max_tokens": 4, "grammar": "root ::= \"yes\" | \"no\""});
        let (status, r) = post(&app, "/v1/chat/completions", body).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert!(["yes", "no"].contains(&r["choices"][0]["message"]["content"].as_str().unwrap()), "{r}");
    });
}

#[test]
fn embeddings_float_and_base64() {
    runtime().block_on(async {
        let app = shared();
        let (status, r) = post(&app, "/v1/embeddings", json!({"input": ["a cat", "a dog"]})).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(r["object"], "list");
        let data = r["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        let v: Vec<f64> = data[0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
        assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

        let (status, r) =
            post(&app, "/v1/embeddings", json!({"input": "a cat", "encoding_format": "base64", "dimensions": v.len()}))
                .await;
        assert_eq!(status, StatusCode::OK, "{r}");
        let b64 = r["data"][0]["embedding"].as_str().unwrap();
        assert_eq!(b64.len(), (v.len() * 4).div_ceil(3) * 4);
    });
}

#[test]
fn models_health_metrics_tokenize_detokenize() {
    runtime().block_on(async {
        let app = shared();
        let (status, r) = post(&app, "/v1/chat/completions", json!({"messages": user("Hi"), "max_tokens": 2})).await;
        assert_eq!(status, StatusCode::OK, "{r}");

        let (status, text) = get(&app, "/v1/models").await;
        assert_eq!(status, StatusCode::OK);
        let list: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(list["object"], "list");
        assert_eq!(list["data"][0]["id"], "smollm2");
        assert_eq!(list["data"][0]["object"], "model");
        assert_eq!(list["data"][0]["loaded"], true);
        let (status, text) = get(&app, "/v1/models/smollm2").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let (status, text) = get(&app, "/v1/models/other").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{text}");

        let (status, text) = get(&app, "/health").await;
        assert_eq!((status, text.as_str()), (StatusCode::OK, r#"{"status":"ok"}"#));

        let (status, text) = get(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        for needle in [
            "llama_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"}",
            "llama_generated_tokens_total{model=\"smollm2\"}",
            "llama_time_to_first_token_seconds_bucket{model=\"smollm2\",le=\"+Inf\"}",
            "llama_finished_total{model=\"smollm2\",reason=\"length\"}",
            "llama_model_loaded{model=\"smollm2\"} 1",
            "# TYPE llama_inter_token_latency_seconds histogram",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }

        let (status, r) = post(&app, "/tokenize", json!({"content": "Hello world", "with_pieces": true})).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        let pieces = r["tokens"].as_array().unwrap();
        let text: String = pieces.iter().map(|p| p["piece"].as_str().unwrap()).collect();
        assert_eq!(text, "Hello world");
        let ids: Vec<Value> = pieces.iter().map(|p| p["id"].clone()).collect();
        let (status, r) = post(&app, "/detokenize", json!({"tokens": ids})).await;
        assert_eq!((status, r["content"].as_str()), (StatusCode::OK, Some("Hello world")));
    });
}

/// Every bad input: its status, an OpenAI error body, and `/health` still answering.
#[test]
fn bad_inputs_get_their_status_and_the_server_stays_healthy() {
    runtime().block_on(async {
        let app = shared();
        // Loaded first: `/health` answers 503 while a model loads.
        let (status, r) = post(&app, "/v1/chat/completions", json!({"messages": user("Hi"), "max_tokens": 1})).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        let msg = user("hi");
        let cases: Vec<(&str, &str, Body, StatusCode, Option<&str>)> = vec![
            ("malformed JSON", "/v1/chat/completions", Body::from("{\"messages\": ["), StatusCode::BAD_REQUEST, None),
            ("empty body", "/v1/chat/completions", Body::empty(), StatusCode::BAD_REQUEST, None),
            ("trailing garbage", "/v1/chat/completions", Body::from("{} {}"), StatusCode::BAD_REQUEST, None),
            (
                "invalid UTF-8",
                "/v1/chat/completions",
                Body::from(b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\"}]}".to_vec()),
                StatusCode::BAD_REQUEST,
                None,
            ),
            ("too large", "/v1/chat/completions", Body::from(vec![b' '; 2 << 20]), StatusCode::PAYLOAD_TOO_LARGE, None),
        ];
        let json_cases: Vec<(&str, &str, Value, StatusCode, Option<&str>)> = vec![
            (
                "messages not a list",
                "/v1/chat/completions",
                json!({"messages": "hi"}),
                StatusCode::BAD_REQUEST,
                Some("messages"),
            ),
            (
                "empty messages",
                "/v1/chat/completions",
                json!({"messages": []}),
                StatusCode::BAD_REQUEST,
                Some("messages"),
            ),
            ("missing messages", "/v1/chat/completions", json!({"model": "smollm2"}), StatusCode::BAD_REQUEST, None),
            (
                "unknown role",
                "/v1/chat/completions",
                json!({"messages": [{"role": "x", "content": "a"}]}),
                StatusCode::BAD_REQUEST,
                Some("messages[0].role"),
            ),
            (
                "image part that is no data: URL",
                "/v1/chat/completions",
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
                StatusCode::BAD_REQUEST,
                Some("messages[0].content[0].image_url.url"),
            ),
            (
                "content a number",
                "/v1/chat/completions",
                json!({"messages": [{"role": "user", "content": 5}]}),
                StatusCode::BAD_REQUEST,
                Some("messages[0].content"),
            ),
            (
                "a tool without its function",
                "/v1/chat/completions",
                json!({"messages": msg, "tools": [{"type": "function"}]}),
                StatusCode::BAD_REQUEST,
                Some("tools[0]"),
            ),
            (
                "a tool that is not a function",
                "/v1/chat/completions",
                json!({"messages": msg, "tools": [{"type": "retrieval", "function": {"name": "f"}}]}),
                StatusCode::BAD_REQUEST,
                Some("tools[0].type"),
            ),
            (
                "tool_choice without tools",
                "/v1/chat/completions",
                json!({"messages": msg, "tool_choice": "required"}),
                StatusCode::BAD_REQUEST,
                Some("tool_choice"),
            ),
            (
                "an unknown tool_choice",
                "/v1/chat/completions",
                json!({"messages": msg, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "always"}),
                StatusCode::BAD_REQUEST,
                Some("tool_choice"),
            ),
            (
                "negative max_tokens",
                "/v1/chat/completions",
                json!({"messages": msg, "max_tokens": -1}),
                StatusCode::BAD_REQUEST,
                Some("max_tokens"),
            ),
            (
                "zero max_completion_tokens",
                "/v1/chat/completions",
                json!({"messages": msg, "max_completion_tokens": 0}),
                StatusCode::BAD_REQUEST,
                Some("max_completion_tokens"),
            ),
            (
                "huge max_tokens",
                "/v1/chat/completions",
                json!({"messages": msg, "max_tokens": 1_000_000_000_000u64}),
                StatusCode::BAD_REQUEST,
                Some("max_tokens"),
            ),
            (
                "max_tokens a float",
                "/v1/chat/completions",
                json!({"messages": msg, "max_tokens": 1e30}),
                StatusCode::BAD_REQUEST,
                Some("max_tokens"),
            ),
            (
                "max_tokens a string",
                "/v1/chat/completions",
                json!({"messages": msg, "max_tokens": "ten"}),
                StatusCode::BAD_REQUEST,
                Some("max_tokens"),
            ),
            (
                "temperature a string",
                "/v1/chat/completions",
                json!({"messages": msg, "temperature": "hot"}),
                StatusCode::BAD_REQUEST,
                Some("temperature"),
            ),
            (
                "temperature out of range",
                "/v1/chat/completions",
                json!({"messages": msg, "temperature": 3}),
                StatusCode::BAD_REQUEST,
                Some("temperature"),
            ),
            (
                "top_p out of range",
                "/v1/chat/completions",
                json!({"messages": msg, "top_p": -0.5}),
                StatusCode::BAD_REQUEST,
                Some("top_p"),
            ),
            (
                "penalty out of range",
                "/v1/chat/completions",
                json!({"messages": msg, "presence_penalty": 7}),
                StatusCode::BAD_REQUEST,
                Some("presence_penalty"),
            ),
            (
                "stop a number",
                "/v1/chat/completions",
                json!({"messages": msg, "stop": 5}),
                StatusCode::BAD_REQUEST,
                Some("stop"),
            ),
            (
                "stop list of numbers",
                "/v1/chat/completions",
                json!({"messages": msg, "stop": [1]}),
                StatusCode::BAD_REQUEST,
                Some("stop[0]"),
            ),
            ("n zero", "/v1/chat/completions", json!({"messages": msg, "n": 0}), StatusCode::BAD_REQUEST, Some("n")),
            (
                "n over the slots",
                "/v1/chat/completions",
                json!({"messages": msg, "n": 5}),
                StatusCode::BAD_REQUEST,
                Some("n"),
            ),
            (
                "top_logprobs without logprobs",
                "/v1/chat/completions",
                json!({"messages": msg, "top_logprobs": 3}),
                StatusCode::BAD_REQUEST,
                Some("top_logprobs"),
            ),
            (
                "top_logprobs too many",
                "/v1/chat/completions",
                json!({"messages": msg, "logprobs": true, "top_logprobs": 50}),
                StatusCode::BAD_REQUEST,
                Some("top_logprobs"),
            ),
            (
                "logit_bias key",
                "/v1/chat/completions",
                json!({"messages": msg, "logit_bias": {"abc": 1}}),
                StatusCode::BAD_REQUEST,
                Some("logit_bias.abc"),
            ),
            (
                "logit_bias token",
                "/v1/chat/completions",
                json!({"messages": msg, "logit_bias": {"99999999": 1}}),
                StatusCode::BAD_REQUEST,
                Some("logit_bias.99999999"),
            ),
            (
                "logit_bias value",
                "/v1/chat/completions",
                json!({"messages": msg, "logit_bias": {"5": 1000}}),
                StatusCode::BAD_REQUEST,
                Some("logit_bias.5"),
            ),
            (
                "huge grammar",
                "/v1/chat/completions",
                json!({"messages": msg, "grammar": format!("root ::= \"{}\"", "a".repeat(100_000))}),
                StatusCode::BAD_REQUEST,
                Some("grammar"),
            ),
            (
                "bad grammar",
                "/v1/chat/completions",
                json!({"messages": msg, "grammar": "root ::= ("}),
                StatusCode::BAD_REQUEST,
                Some("grammar"),
            ),
            (
                "grammar and schema",
                "/v1/chat/completions",
                json!({"messages": msg, "grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}}),
                StatusCode::BAD_REQUEST,
                Some("grammar"),
            ),
            (
                "unknown response_format",
                "/v1/chat/completions",
                json!({"messages": msg, "response_format": {"type": "xml"}}),
                StatusCode::BAD_REQUEST,
                Some("response_format.type"),
            ),
            (
                "schema not an object",
                "/v1/chat/completions",
                json!({"messages": msg, "response_format": {"type": "json_schema", "json_schema": {"schema": 5}}}),
                StatusCode::BAD_REQUEST,
                Some("response_format.json_schema.schema"),
            ),
            (
                "bad keep_alive",
                "/v1/chat/completions",
                json!({"messages": msg, "keep_alive": "soon"}),
                StatusCode::BAD_REQUEST,
                Some("keep_alive"),
            ),
            (
                "unknown model",
                "/v1/chat/completions",
                json!({"model": "gpt-4", "messages": msg}),
                StatusCode::NOT_FOUND,
                Some("model"),
            ),
            (
                "prompt over the context",
                "/v1/completions",
                json!({"prompt": "hello ".repeat(3000), "max_tokens": 4}),
                StatusCode::BAD_REQUEST,
                Some("prompt"),
            ),
            ("two prompts", "/v1/completions", json!({"prompt": ["a", "b"]}), StatusCode::BAD_REQUEST, Some("prompt")),
            ("mixed prompt", "/v1/completions", json!({"prompt": ["a", 5]}), StatusCode::BAD_REQUEST, Some("prompt")),
            ("token out of range", "/v1/completions", json!({"prompt": [[99999999]]}), StatusCode::BAD_REQUEST, None),
            ("token beyond i32", "/v1/completions", json!({"prompt": [1e20]}), StatusCode::BAD_REQUEST, Some("prompt")),
            ("echo", "/v1/completions", json!({"prompt": "a", "echo": true}), StatusCode::BAD_REQUEST, Some("echo")),
            ("no embedding input", "/v1/embeddings", json!({"input": []}), StatusCode::BAD_REQUEST, Some("input")),
            ("embedding tokens", "/v1/embeddings", json!({"input": [1, 2]}), StatusCode::BAD_REQUEST, Some("input")),
            (
                "embedding format",
                "/v1/embeddings",
                json!({"input": "a", "encoding_format": "hex"}),
                StatusCode::BAD_REQUEST,
                Some("encoding_format"),
            ),
            (
                "embedding dimensions",
                "/v1/embeddings",
                json!({"input": "a", "dimensions": 3}),
                StatusCode::BAD_REQUEST,
                Some("dimensions"),
            ),
            ("tokenize without content", "/tokenize", json!({}), StatusCode::BAD_REQUEST, None),
            ("detokenize bad id", "/detokenize", json!({"tokens": [-1]}), StatusCode::BAD_REQUEST, Some("tokens")),
        ];
        let all = cases
            .into_iter()
            .chain(json_cases.into_iter().map(|(w, p, v, s, param)| (w, p, Body::from(v.to_string()), s, param)));
        for (what, path, body, expected, param) in all {
            let r = send(&app, Method::POST, path, body).await;
            let status = r.status();
            let body = json_of(r).await;
            assert_eq!(status, expected, "{what}: {body}");
            assert_error(&body, param);
            if what == "prompt over the context" {
                let m = body["error"]["message"].as_str().unwrap();
                assert!(m.contains("1024") && m.contains("3001"), "{what}: names both sizes: {m}");
                assert_eq!(body["error"]["code"], "context_length_exceeded");
            }
            let (status, _) = get(&app, "/health").await;
            assert_eq!(status, StatusCode::OK, "{what}: /health after it");
        }
        for (method, path, expected) in [
            (Method::GET, "/nowhere", StatusCode::NOT_FOUND),
            (Method::DELETE, "/v1/models", StatusCode::METHOD_NOT_ALLOWED),
            (Method::GET, "/v1/chat/completions", StatusCode::METHOD_NOT_ALLOWED),
        ] {
            let r = send(&app, method, path, Body::empty()).await;
            assert_eq!(r.status(), expected, "{path}");
            assert_error(&json_of(r).await, None);
        }
    });
}

#[test]
fn api_key_guards_every_route_but_health() {
    runtime().block_on(async {
        let registry = {
            let _guard = runtime().enter();
            Registry::new(vec![spec("smollm2")], config(1, 4), 1, KeepAlive::Forever, Duration::from_secs(60))
        };
        let app = routes::router(state(registry, Some("sesame")), None);
        let (status, body) = get(&app, "/v1/models").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_error(&serde_json::from_str(&body).unwrap(), None);
        let (status, _) = get(&app, "/health").await;
        assert_eq!(status, StatusCode::OK);
        for auth in ["Bearer wrong", "sesame", "Bearer sesam"] {
            let req = Request::get("/metrics").header(header::AUTHORIZATION, auth).body(Body::empty()).unwrap();
            assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::UNAUTHORIZED, "{auth}");
        }
        let req =
            Request::get("/v1/models").header(header::AUTHORIZATION, "Bearer sesame").body(Body::empty()).unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::OK);
    });
}

/// With one slot and a queue of one, the third request is refused at once with 503 and
/// `Retry-After`; a client that leaves, queued or mid-stream, cancels its request (counted),
/// and the slot serves the next one.
#[test]
fn full_queue_is_503_and_a_dropped_stream_frees_its_slot() {
    runtime().block_on(async {
        let s = {
            let _guard = runtime().enter();
            state(
                Registry::new(vec![spec("smollm2")], config(1, 1), 1, KeepAlive::Forever, Duration::from_secs(60)),
                None,
            )
        };
        let app = routes::router(s.clone(), None);
        let long = json!({"messages": user("Tell a long story."), "max_tokens": 400, "stream": true});
        let running = send(&app, Method::POST, "/v1/chat/completions", long.to_string()).await;
        assert_eq!(running.status(), StatusCode::OK);
        let mut running = running.into_body().into_data_stream();
        assert!(running.next().await.is_some(), "the first request streams");

        let queued = tokio::spawn({
            let app = app.clone();
            async move { post(&app, "/v1/chat/completions", json!({"messages": user("Hi"), "max_tokens": 2})).await }
        });
        let stats = || s.registry.stats().remove(0).metrics;
        while stats().queue_depth == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let refused =
            send(&app, Method::POST, "/v1/chat/completions", json!({"messages": user("Hi")}).to_string()).await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
        assert_error(&json_of(refused).await, None);

        // The queued client goes away: its request leaves the queue without taking a slot.
        queued.abort();
        while stats().queue_depth > 0 || s.http.disconnects() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The client of the long stream goes away: its slot serves the next request.
        drop(running);
        let next = post(&app, "/v1/chat/completions", json!({"messages": user("Hi"), "max_tokens": 2}));
        let (status, r) = tokio::time::timeout(Duration::from_secs(60), next).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(s.http.disconnects(), 2);
        let m = stats();
        assert_eq!(m.finished.cancelled, 2);
        assert!(m.generated_tokens < 400, "the dropped stream stopped early");
        assert_eq!(m.rejected_busy, 1);
    });
}

/// A request's `keep_alive: 0` unloads the model after its reply; the next request loads it
/// again. With room for one model, asking for the other evicts the idle one.
#[test]
fn keep_alive_and_eviction() {
    runtime().block_on(async {
        let s = {
            let _guard = runtime().enter();
            let registry = Registry::new(vec![spec("a"), spec("b")], config(1, 4), 1, KeepAlive::Forever, Duration::from_secs(60));
            tokio::spawn(registry.clone().run_expiry());
            state(registry, None)
        };
        let app = routes::router(s.clone(), None);
        let loaded = || s.registry.cards().iter().map(|c| (c.id.clone(), c.loaded)).collect::<Vec<_>>();
        let chat = |model: &str, keep_alive: Value| {
            json!({"model": model, "messages": user("Hi"), "max_tokens": 2, "keep_alive": keep_alive})
        };

        let (status, r) = post(&app, "/v1/chat/completions", chat("a", json!(0))).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(loaded(), [("a".into(), false), ("b".into(), false)]);

        let (status, r) = post(&app, "/v1/chat/completions", chat("a", json!("10m"))).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(loaded(), [("a".into(), true), ("b".into(), false)]);
        let expires = s.registry.cards()[0].expires_at.unwrap();
        let now = generation::unix_now();
        assert!((now + 590..=now + 601).contains(&expires), "{expires} vs {now}");

        let (status, r) = post(&app, "/v1/chat/completions", chat("b", json!(-1))).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(r["model"], "b");
        assert_eq!(loaded(), [("a".into(), false), ("b".into(), true)]);
        assert_eq!(s.registry.cards()[1].expires_at, None, "kept forever");

        let (status, r) = post(&app, "/v1/chat/completions", chat("b", json!("1s"))).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(loaded(), [("a".into(), false), ("b".into(), false)], "expired after 1s");

        let stats = s.registry.stats();
        assert_eq!((stats[0].loads, stats[1].loads), (2, 1));
        // Counters of unloaded engines are kept.
        assert!(stats[0].metrics.requests == 2 && stats[1].metrics.requests == 2, "{stats:?}");
    });
}

#[test]
fn lenient_wire_types() {
    use openai::{ChatRequest, Content, KeepAliveValue, Options, PromptInput};
    let req: ChatRequest = body::parse(
        br#"{"messages":[{"role":"user","content":null},{"role":"user","content":[{"type":"text","text":"a"}]}],
            "stop":"x","max_tokens":null,"tools":null,"unknown":[1,2,3]}"#,
    )
    .unwrap();
    assert!(req.messages[0].content.is_none());
    assert!(matches!(&req.messages[1].content, Some(Content::Parts(p)) if p[0].text.as_deref() == Some("a")));
    let o: Options = body::parse(br#"{"stop":["a","b"],"keep_alive":"5m","seed":-3,"max_tokens":null}"#).unwrap();
    assert_eq!(o.stop.unwrap().0, ["a", "b"]);
    assert!(matches!(o.keep_alive, Some(KeepAliveValue::Text(ref s)) if s == "5m"));
    assert!(o.max_tokens.is_none());
    let p: PromptInput = body::parse(b"[[1,2],[3]]").unwrap();
    assert!(matches!(p, PromptInput::Tokens(ref t) if t.len() == 2));
    let e = body::parse::<Options>(br#"{"temperature":"warm"}"#).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("temperature"));
}

/// A registered file that is not a model (the operator's mistake, not the client's): a 500 that
/// does not reveal the path, the server stays up, and the next request tries again.
#[test]
fn a_model_that_fails_to_load_is_a_server_error() {
    runtime().block_on(async {
        let bad = std::env::temp_dir().join(format!("not-a-model-{}.gguf", std::process::id()));
        std::fs::write(&bad, b"GGUF but not really").unwrap();
        let s = {
            let spec = ModelSpec { name: "broken".into(), path: bad.clone(), projector: None, media: (false, false) };
            state(Registry::new(vec![spec], config(1, 4), 1, KeepAlive::Forever, Duration::from_secs(60)), None)
        };
        let app = routes::router(s.clone(), None);
        for _ in 0..2 {
            let (status, r) = post(&app, "/v1/chat/completions", json!({"messages": user("Hi")})).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{r}");
            assert_error(&r, None);
            assert!(!r["error"]["message"].as_str().unwrap().contains(bad.to_str().unwrap()), "{r}");
            let (status, _) = get(&app, "/health").await;
            assert_eq!(status, StatusCode::OK);
        }
        assert_eq!(s.registry.stats()[0].loads, 0);
        let _ = std::fs::remove_file(bad);
    });
}

/// A request with the given headers (and no others).
pub(super) async fn raw(app: &Router, method: Method, path: &str, headers: &[(&str, &str)], body: String) -> Response {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    app.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap()
}

/// What a web page can send to a server on the user's machine is refused before any model is
/// touched: a "simple" cross-site request (no CORS preflight), a DNS-rebound host name, a
/// foreign origin. curl and the SDKs outside a browser (no `Origin`, a loopback `Host`, JSON)
/// pass, and so does the server's own origin.
#[test]
fn web_pages_cannot_drive_a_loopback_server() {
    runtime().block_on(async {
        let s = {
            let _guard = runtime().enter();
            let registry =
                Registry::new(vec![spec("smollm2")], config(1, 4), 1, KeepAlive::Forever, Duration::from_secs(60));
            state(registry, None)
        };
        let app = routes::router(s.clone(), None);
        let chat = json!({"messages": user("Hi"), "max_tokens": 2}).to_string();
        let refused: [(&[(&str, &str)], StatusCode); 6] = [
            (
                &[("content-type", "text/plain"), ("origin", "http://evil.example"), ("host", "127.0.0.1:8080")],
                StatusCode::FORBIDDEN,
            ),
            (&[("content-type", "text/plain"), ("host", "127.0.0.1:8080")], StatusCode::UNSUPPORTED_MEDIA_TYPE),
            (&[("content-type", "application/x-www-form-urlencoded")], StatusCode::UNSUPPORTED_MEDIA_TYPE),
            (&[("content-type", "multipart/form-data; boundary=x")], StatusCode::UNSUPPORTED_MEDIA_TYPE),
            (
                &[("content-type", "application/json"), ("host", "attacker.example:8080")],
                StatusCode::MISDIRECTED_REQUEST,
            ),
            (
                &[
                    ("content-type", "application/json"),
                    ("host", "attacker.example"),
                    ("origin", "http://attacker.example"),
                ],
                StatusCode::MISDIRECTED_REQUEST,
            ),
        ];
        for (headers, expected) in refused {
            let r = raw(&app, Method::POST, "/v1/chat/completions", headers, chat.clone()).await;
            assert_eq!(r.status(), expected, "{headers:?}");
            assert_error(&json_of(r).await, None);
        }
        // Rebinding also cannot read: GETs need an allowed host too.
        let r = raw(&app, Method::GET, "/v1/models", &[("host", "attacker.example")], String::new()).await;
        assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
        let stats = &s.registry.stats()[0];
        assert_eq!((stats.loads, stats.metrics.requests), (0, 0), "nothing ran");

        let allowed: [&[(&str, &str)]; 4] = [
            &[("content-type", "application/json"), ("host", "localhost:8080")],
            &[("host", "127.0.0.1:8080")],
            &[("content-type", "application/json; charset=utf-8"), ("host", "[::1]:8080")],
            &[("content-type", "application/json"), ("host", "localhost:8080"), ("origin", "http://localhost:8080")],
        ];
        for headers in allowed {
            let r = raw(&app, Method::POST, "/v1/chat/completions", headers, chat.clone()).await;
            assert_eq!(r.status(), StatusCode::OK, "{headers:?}");
        }
    });
}

/// With `--allow-origin`, that origin's page may call: the preflight allows the headers the
/// official SDKs send and the page can read `Retry-After`. Other origins are still refused.
#[test]
fn allowed_origins_get_cors_and_others_do_not() {
    runtime().block_on(async {
        let page = "http://localhost:5173";
        let s = {
            let _guard = runtime().enter();
            let mut s = state(
                Registry::new(vec![spec("smollm2")], config(1, 4), 1, KeepAlive::Forever, Duration::from_secs(60)),
                None,
            );
            s.guard = Arc::new(Guard::new(&[], &[page.to_string()]));
            s
        };
        let cors = super::security::cors(&[page.to_string()]).unwrap();
        let app = routes::router(s, cors);
        let preflight = [
            ("origin", page),
            ("host", "127.0.0.1:8080"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "authorization,content-type,x-stainless-os,x-stainless-retry-count"),
        ];
        let r = raw(&app, Method::OPTIONS, "/v1/chat/completions", &preflight, String::new()).await;
        assert!(r.status().is_success(), "{}", r.status());
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], page);
        let allowed = h["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
        assert!(allowed.contains("x-stainless-os") && allowed.contains("authorization"), "{allowed}");

        let chat = json!({"messages": user("Hi"), "max_tokens": 2}).to_string();
        let headers = [("origin", page), ("host", "127.0.0.1:8080"), ("content-type", "application/json")];
        let r = raw(&app, Method::POST, "/v1/chat/completions", &headers, chat.clone()).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["access-control-allow-origin"], page);
        let exposed = r.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
        assert!(exposed.contains("retry-after"), "{exposed}");

        let other =
            [("origin", "http://evil.example"), ("host", "127.0.0.1:8080"), ("content-type", "application/json")];
        let r = raw(&app, Method::POST, "/v1/chat/completions", &other, chat).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.headers().get("access-control-allow-origin").is_none());
    });
}

/// The scheme of `Authorization` is case-insensitive; a stop sequence longer than the bound is
/// a 400 naming `stop`.
#[test]
fn bearer_in_any_case_and_bounded_stop_sequences() {
    runtime().block_on(async {
        let registry = {
            let _guard = runtime().enter();
            Registry::new(vec![spec("smollm2")], config(1, 4), 1, KeepAlive::Forever, Duration::from_secs(60))
        };
        let app = routes::router(state(registry, Some("sesame")), None);
        for auth in ["bearer sesame", "BEARER sesame", "Bearer  sesame "] {
            let req = Request::get("/v1/models").header(header::AUTHORIZATION, auth).body(Body::empty()).unwrap();
            assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::OK, "{auth}");
        }
        let (status, r) = post(&shared(), "/v1/completions", json!({"prompt": "a", "stop": ["x".repeat(257)]})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
        assert_error(&r, Some("stop"));
    });
}

/// One model loaded at a time, steady traffic on `a`: a request for `b` is not starved — new
/// requests for `a` wait while `a` drains, `b` loads and answers first. Waiting is bounded:
/// past the load wait, a 503 with `Retry-After`.
#[test]
fn a_model_waiting_for_room_is_not_starved_and_waits_are_bounded() {
    runtime().block_on(async {
        let s = {
            let _guard = runtime().enter();
            let registry =
                Registry::new(vec![spec("a"), spec("b")], config(2, 4), 1, KeepAlive::Forever, Duration::from_secs(60));
            state(registry, None)
        };
        let app = routes::router(s.clone(), None);
        let long = json!({"model": "a", "messages": user("Tell a long story."), "max_tokens": 300, "stream": true});
        let running = send(&app, Method::POST, "/v1/chat/completions", long.to_string()).await;
        assert_eq!(running.status(), StatusCode::OK);
        let mut running = running.into_body().into_data_stream();
        assert!(running.next().await.is_some());
        let short = |m: &str| json!({"model": m, "messages": user("Hi"), "max_tokens": 2});
        // A short chat in the background; its answer and when it came.
        let spawn_short = |m: &str| {
            let (app, body) = (app.clone(), short(m));
            tokio::spawn(async move { (post(&app, "/v1/chat/completions", body).await, std::time::Instant::now()) })
        };
        let b = spawn_short("b");
        // `b` now waits for room; a new request for `a` must wait behind it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!b.is_finished());
        let a = spawn_short("a");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!a.is_finished(), "a new request for `a` waits while `b` waits for room");
        // Drain the long stream: `a` goes idle, `b` loads and answers, then `a` again.
        while running.next().await.is_some() {}
        let ((status_b, rb), at_b) = b.await.unwrap();
        let ((status_a, ra), at_a) = a.await.unwrap();
        assert_eq!((status_b, status_a), (StatusCode::OK, StatusCode::OK), "{rb} {ra}");
        assert!(at_b <= at_a, "`b` was served first");

        // `a` holds the only place again for a while: `b` gives up after the load wait.
        let s = {
            let _guard = runtime().enter();
            let registry =
                Registry::new(vec![spec("a"), spec("b")], config(1, 4), 1, KeepAlive::Forever, Duration::from_secs(1));
            state(registry, None)
        };
        let app = routes::router(s, None);
        let running = send(&app, Method::POST, "/v1/chat/completions", long.to_string()).await;
        let mut running = running.into_body().into_data_stream();
        assert!(running.next().await.is_some());
        let r = send(&app, Method::POST, "/v1/chat/completions", short("b").to_string()).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
        assert_error(&json_of(r).await, None);
    });
}
