//! The Responses, Anthropic and Ollama routes in-process: their shapes, stream orders and error
//! bodies, on SmolLM2. The official SDKs drive the same routes over TCP in
//! `examples/server/tests/loopback.rs`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

use super::keep_alive::KeepAlive;
use super::registry::Registry;
use super::routes;
use super::tests::{config, get, json_of, post, raw, runtime, send, shared, spec, state, user};

/// Named SSE events: `(event, data)`.
async fn named_events(r: Response) -> Vec<(String, Value)> {
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        if !data.is_empty() {
            out.push((name, serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"))));
        }
    }
    out
}

/// NDJSON lines, each a JSON object.
async fn lines(r: Response) -> Vec<Value> {
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.ends_with('\n') && !text.contains("\n\n"), "{text}");
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// A stop sequence any English reply reaches ("e"), listed after one it never does: the one
/// that matched comes back as `stop_sequence`, and is cut from the text.
async fn stop_at_a_letter(app: &Router) {
    let body = json!({"model": "smollm2", "max_tokens": 24, "messages": user("Describe the sea."),
                      "stop_sequences": ["zzzz", "e"]});
    let (status, stopped) = post(app, "/v1/messages", body).await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["stop_reason"], "stop_sequence", "{stopped}");
    assert_eq!(stopped["stop_sequence"], "e");
    assert!(!stopped["content"][0]["text"].as_str().unwrap().contains('e'), "{stopped}");
}

#[test]
fn anthropic_messages_reply_stream_and_errors() {
    runtime().block_on(async {
        let app = shared();
        let body = json!({"model": "smollm2", "max_tokens": 8, "system": [{"type": "text", "text": "Be brief."}],
                          "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
                          "metadata": {"user_id": "u1"}, "anthropic_future_field": true});
        let (status, m) = post(&app, "/v1/messages", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{m}");
        assert_eq!(
            (m["type"].as_str(), m["role"].as_str(), m["model"].as_str()),
            (Some("message"), Some("assistant"), Some("smollm2"))
        );
        assert!(m["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(m["content"][0]["type"], "text");
        assert!(["end_turn", "max_tokens"].contains(&m["stop_reason"].as_str().unwrap()), "{m}");
        assert!(count(&m["usage"]["output_tokens"]) <= 8);
        assert!(count(&m["usage"]["input_tokens"]) + count(&m["usage"]["cache_read_input_tokens"]) > 5);

        // The stream: named events in Anthropic's order, block indices from 0.
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let r = send(&app, Method::POST, "/v1/messages", streamed.to_string()).await;
        assert_eq!(r.status(), StatusCode::OK);
        let events = named_events(r).await;
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
        assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"], "{names:?}");
        assert_eq!(names[1], "content_block_start");
        assert_eq!(names[names.len() - 3], "content_block_stop");
        assert!(names[2..names.len() - 3].iter().all(|n| *n == "content_block_delta"), "{names:?}");
        assert!(events.iter().all(|(n, d)| d["type"] == n.as_str()), "{events:?}");
        assert_eq!(events[0].1["message"]["content"], json!([]));
        assert_eq!(events[1].1["index"], 0);
        let delta = &events[events.len() - 2].1;
        assert!(count(&delta["usage"]["output_tokens"]) <= 8 && delta["delta"]["stop_reason"].is_string(), "{delta}");

        stop_at_a_letter(&app).await;

        // Errors in Anthropic's shape, the status the SDK maps.
        for (why, body, status, kind) in [
            ("no max_tokens", json!({"model": "smollm2", "messages": user("x")}), 400, "invalid_request_error"),
            ("unknown model", json!({"model": "nope", "max_tokens": 4, "messages": user("x")}), 404, "not_found_error"),
            (
                "an image for a model served without a projector",
                json!({"model": "smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]}),
                400,
                "invalid_request_error",
            ),
            (
                "a server tool",
                json!({"model": "smollm2", "max_tokens": 4, "messages": user("x"),
                "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                400,
                "invalid_request_error",
            ),
            ("no messages", json!({"model": "smollm2", "max_tokens": 4, "messages": []}), 400, "invalid_request_error"),
            (
                "a bad role",
                json!({"model": "smollm2", "max_tokens": 4, "messages": [{"role": "robot", "content": "x"}]}),
                400,
                "invalid_request_error",
            ),
        ] {
            let (s, e) = post(&app, "/v1/messages", body).await;
            assert_eq!(s.as_u16(), status, "{why}: {e}");
            assert_eq!((e["type"].as_str(), e["error"]["type"].as_str()), (Some("error"), Some(kind)), "{why}: {e}");
            assert!(e["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{why}: {e}");
        }
        let r = raw(&app, Method::POST, "/v1/messages", &[("content-type", "application/json")], "{oops".into()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(json_of(r).await["error"]["type"], "invalid_request_error");

        // count_tokens: what the reply's usage counts.
        let ask = json!({"model": "smollm2", "messages": user("Say hello.")});
        let (s, counted) = post(&app, "/v1/messages/count_tokens", ask.clone()).await;
        assert_eq!(s, StatusCode::OK, "{counted}");
        let mut gen = ask;
        gen["max_tokens"] = json!(1);
        let (_, m) = post(&app, "/v1/messages", gen).await;
        let prompt = count(&m["usage"]["input_tokens"]) + count(&m["usage"]["cache_read_input_tokens"]);
        assert_eq!(count(&counted["input_tokens"]), prompt);

        let (status, health) = get(&app, "/health").await;
        assert_eq!(status, StatusCode::OK, "{health}");
    });
}

#[test]
fn anthropic_key_header_and_error_shape_of_the_guards() {
    runtime().block_on(async {
        let registry = {
            let _guard = runtime().enter();
            Registry::new(vec![spec("smollm2")], config(1, 4), 1, KeepAlive::Forever, Duration::from_secs(60))
        };
        let app = routes::router(state(registry, Some("sesame")), None);
        let body = json!({"model": "smollm2", "max_tokens": 2, "messages": user("Hi")}).to_string();
        let json = ("content-type", "application/json");
        let r = raw(&app, Method::POST, "/v1/messages", &[json, ("x-api-key", "wrong")], body.clone()).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json_of(r).await["error"]["type"], "authentication_error");
        let r = raw(&app, Method::POST, "/v1/messages", &[json, ("x-api-key", "sesame")], body.clone()).await;
        assert_eq!(r.status(), StatusCode::OK);
        // A page from elsewhere is refused in the protocol's shape too.
        let page = ("origin", "https://evil.example");
        let r = raw(&app, Method::POST, "/v1/messages", &[json, ("x-api-key", "sesame"), page], body).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(json_of(r).await["error"]["type"], "permission_error");
        let r = raw(&app, Method::GET, "/api/tags", &[], String::new()).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(json_of(r).await["error"].is_string());
    });
}

#[test]
fn ollama_chat_generate_and_their_streams() {
    runtime().block_on(async {
        let app = shared();
        let body = json!({"model": "smollm2", "messages": user("Say hello."), "stream": false,
                          "options": {"num_predict": 6, "temperature": 0, "num_ctx": 2048, "mirostat": 0}});
        let (status, r) = post(&app, "/api/chat", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(
            (r["model"].as_str(), r["message"]["role"].as_str(), r["done"].as_bool()),
            (Some("smollm2"), Some("assistant"), Some(true))
        );
        assert!(!r["message"]["content"].as_str().unwrap().is_empty());
        assert!(["stop", "length"].contains(&r["done_reason"].as_str().unwrap()), "{r}");
        assert!(count(&r["eval_count"]) <= 6 && count(&r["prompt_eval_count"]) > 3, "{r}");
        assert!(count(&r["total_duration"]) >= count(&r["eval_duration"]), "{r}");
        assert!(r["created_at"].as_str().unwrap().ends_with('Z'));

        // Ollama streams unless told not to: NDJSON, every line with the message's role.
        let mut streamed = body.clone();
        streamed.as_object_mut().unwrap().remove("stream");
        let r = send(&app, Method::POST, "/api/chat", streamed.to_string()).await;
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/x-ndjson");
        let all = lines(r).await;
        assert!(all.iter().all(|l| l["message"]["role"] == "assistant"), "{all:?}");
        let (last, pieces) = all.split_last().unwrap();
        assert!(last["done"] == true && last["done_reason"].is_string() && last["eval_count"].is_u64(), "{last}");
        assert!(pieces.iter().all(|l| l["done"] == false));
        // One line per token with text (greedy replies are not compared with the whole reply:
        // other tests share the engine, and a different batch can tip a near tie).
        let text: String = pieces.iter().map(|l| l["message"]["content"].as_str().unwrap()).collect();
        assert!(!text.is_empty() && pieces.len() as u64 <= count(&last["eval_count"]), "{all:?}");

        // Generate: the chat template by default, the text as it is with `raw`.
        for raw_prompt in [false, true] {
            let body = json!({"model": "smollm2", "prompt": "The sky is", "raw": raw_prompt,
                              "options": {"num_predict": 4, "temperature": 0}});
            let all = lines(send(&app, Method::POST, "/api/generate", body.to_string()).await).await;
            assert!(all.len() >= 2 && all.last().unwrap()["done"] == true, "{all:?}");
            assert!(all.iter().all(|l| l["response"].is_string()));
        }
        // Structured output.
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
        let body = json!({"model": "smollm2", "prompt": "Give a number as JSON.", "stream": false, "format": schema,
                          "options": {"num_predict": 32, "temperature": 0}});
        let (_, r) = post(&app, "/api/generate", body).await;
        let parsed: Value = serde_json::from_str(r["response"].as_str().unwrap()).unwrap();
        assert!(parsed["n"].is_i64(), "{parsed}");

        // Nothing to generate: the model is loaded, and said so.
        let (_, r) = post(&app, "/api/generate", json!({"model": "smollm2"})).await;
        assert_eq!((r["done"].as_bool(), r["done_reason"].as_str()), (Some(true), Some("load")), "{r}");
    });
}

#[test]
fn ollama_models_embeddings_and_errors() {
    runtime().block_on(async {
        let app = shared();
        // Loaded by another request first, so `ps` has it.
        let (s, _) = post(&app, "/api/generate", json!({"model": "smollm2"})).await;
        assert_eq!(s, StatusCode::OK);
        let (_, tags) = get(&app, "/api/tags").await;
        let tags: Value = serde_json::from_str(&tags).unwrap();
        let m = &tags["models"][0];
        assert_eq!((m["name"].as_str(), m["model"].as_str()), (Some("smollm2"), Some("smollm2")));
        assert!(count(&m["size"]) > 1_000_000 && m["modified_at"].as_str().unwrap().len() == 27, "{m}");
        let (_, ps) = get(&app, "/api/ps").await;
        let ps: Value = serde_json::from_str(&ps).unwrap();
        assert_eq!(ps["models"][0]["name"], "smollm2", "{ps}");
        assert!(count(&ps["models"][0]["context_length"]) > 0);
        let (s, show) = post(&app, "/api/show", json!({"model": "smollm2"})).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(show["model_info"]["general.architecture"], "llama", "{show}");
        assert_eq!(show["details"]["family"], "llama");
        let (_, v) = get(&app, "/api/version").await;
        assert!(serde_json::from_str::<Value>(&v).unwrap()["version"].is_string());

        let (s, e) = post(&app, "/api/embed", json!({"model": "smollm2", "input": ["a cat", "a dog"]})).await;
        assert_eq!(s, StatusCode::OK, "{e}");
        let vectors = e["embeddings"].as_array().unwrap();
        assert_eq!(vectors.len(), 2);
        let norm: f64 = vectors[0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap().powi(2)).sum();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
        let (_, short) = post(&app, "/api/embed", json!({"model": "smollm2", "input": "a cat", "dimensions": 8})).await;
        assert_eq!(short["embeddings"][0].as_array().unwrap().len(), 8);
        let (_, empty) = post(&app, "/api/embed", json!({"model": "smollm2", "input": ""})).await;
        assert_eq!(empty["embeddings"], json!([]));
        let (_, old) = post(&app, "/api/embeddings", json!({"model": "smollm2", "prompt": "a cat"})).await;
        assert_eq!(old["embedding"].as_array().unwrap().len(), vectors[0].as_array().unwrap().len());

        // Errors: `{"error": "..."}` with the status the client checks, before any stream.
        for (why, path, body, status) in [
            ("unknown model", "/api/chat", json!({"model": "nope", "messages": user("x")}), 404),
            ("unknown model, generate", "/api/generate", json!({"model": "nope", "prompt": "x"}), 404),
            ("a bad format", "/api/chat", json!({"model": "smollm2", "messages": user("x"), "format": 3}), 400),
            (
                "an image for a model served without a projector",
                "/api/chat",
                json!({"model": "smollm2", "messages": [{"role": "user", "content": "x",
                "images": ["AAAA"]}]}),
                400,
            ),
            (
                "a template",
                "/api/generate",
                json!({"model": "smollm2", "prompt": "x", "template": "{{ .Prompt }}"}),
                400,
            ),
            (
                "a bad option type",
                "/api/chat",
                json!({"model": "smollm2", "messages": user("x"),
                "options": {"temperature": "hot"}}),
                400,
            ),
            ("a pull of another model", "/api/pull", json!({"model": "llama3"}), 400),
            ("a copy", "/api/copy", json!({"source": "smollm2", "destination": "x"}), 501),
            (
                "a bad role",
                "/api/chat",
                json!({"model": "smollm2", "messages": [{"role": "robot", "content": "x"}]}),
                400,
            ),
        ] {
            let (s, e) = post(&app, path, body).await;
            assert_eq!(s.as_u16(), status, "{why}: {e}");
            assert!(e["error"].as_str().is_some_and(|m| !m.is_empty()), "{why}: {e}");
        }
        let (s, pulled) = post(&app, "/api/pull", json!({"model": "smollm2"})).await;
        assert_eq!((s, pulled["status"].as_str()), (StatusCode::OK, Some("success")));
        let r = raw(
            &app,
            Method::DELETE,
            "/api/delete",
            &[("content-type", "application/json")],
            r#"{"model":"smollm2"}"#.into(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED);
        let r = send(&app, Method::GET, "/api/nothing", Body::empty()).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(json_of(r).await["error"].is_string());
    });
}

#[test]
fn responses_reply_stream_and_errors() {
    runtime().block_on(async {
        let app = shared();
        let body = json!({"model": "smollm2", "input": "Say hello.", "instructions": "Be brief.",
                          "max_output_tokens": 64, "temperature": 0, "metadata": {"k": "v"}, "store": true});
        let (status, r) = post(&app, "/v1/responses", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!((r["object"].as_str(), r["status"].as_str()), (Some("response"), Some("completed")), "{r}");
        assert!(r["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(r["instructions"], "Be brief.");
        assert_eq!(r["metadata"], json!({"k": "v"}));
        let item = &r["output"][0];
        assert_eq!((item["type"].as_str(), item["role"].as_str()), (Some("message"), Some("assistant")));
        assert_eq!(item["content"][0]["type"], "output_text");
        assert_eq!(item["content"][0]["annotations"], json!([]));
        let u = &r["usage"];
        assert_eq!(count(&u["total_tokens"]), count(&u["input_tokens"]) + count(&u["output_tokens"]));
        assert!(u["input_tokens_details"]["cached_tokens"].is_u64());

        // The token limit: incomplete, saying why.
        let (_, cut) =
            post(&app, "/v1/responses", json!({"input": "Write a long story.", "max_output_tokens": 3})).await;
        assert_eq!(cut["status"], "incomplete", "{cut}");
        assert_eq!(cut["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(cut["output"][0]["status"], "incomplete");

        // The stream: numbered events in the documented order; the final response holds the
        // text the deltas spelled.
        let mut streamed = body;
        streamed["stream"] = json!(true);
        let events = named_events(send(&app, Method::POST, "/v1/responses", streamed.to_string()).await).await;
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names[..4],
            ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"],
            "{names:?}"
        );
        assert_eq!(
            names[names.len() - 4..],
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ],
        );
        assert!(names[4..names.len() - 4].iter().all(|n| *n == "response.output_text.delta"), "{names:?}");
        for (i, (n, d)) in events.iter().enumerate() {
            assert_eq!((d["type"].as_str(), count(&d["sequence_number"])), (Some(n.as_str()), i as u64));
        }
        let id = &events[0].1["response"]["id"];
        assert_eq!(events[0].1["response"]["output"], json!([]));
        let done = &events.last().unwrap().1["response"];
        assert_eq!(&done["id"], id);
        let deltas: String = events.iter().filter_map(|(_, d)| d["delta"].as_str()).collect();
        assert_eq!(done["output"][0]["content"][0]["text"], deltas.as_str());

        // Structured output, as `responses.parse` asks for it.
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        let body = json!({"input": "Name a city as JSON.", "max_output_tokens": 48, "temperature": 0,
                          "text": {"format": {"type": "json_schema", "name": "C", "strict": true, "schema": schema}}});
        let (_, r) = post(&app, "/v1/responses", body).await;
        let parsed: Value = serde_json::from_str(r["output"][0]["content"][0]["text"].as_str().unwrap()).unwrap();
        assert!(parsed["city"].is_string(), "{parsed}");

        // An echoed conversation: items from an earlier output are taken back as they are.
        let history = json!([
            {"role": "user", "content": "Say hello."},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": [], "parsed": null}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "user", "content": [{"type": "input_text", "text": "Again."}]},
        ]);
        let (s, r) = post(&app, "/v1/responses", json!({"input": history, "max_output_tokens": 4})).await;
        assert_eq!(s, StatusCode::OK, "{r}");

        for (why, body, param) in [
            ("stored state", json!({"input": "x", "previous_response_id": "resp_1"}), "previous_response_id"),
            (
                "an image that is no base64 data: URL",
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,",
                "detail": "auto"}]}]}),
                "input[0].content[0].image_url",
            ),
            ("an item reference", json!({"input": [{"type": "item_reference", "id": "msg_1"}]}), "input[0].type"),
            ("a hosted tool", json!({"input": "x", "tools": [{"type": "web_search"}]}), "tools[0].type"),
            ("no input", json!({"model": "smollm2"}), "input"),
            ("a bad format", json!({"input": "x", "text": {"format": {"type": "yaml"}}}), "text.format.type"),
        ] {
            let (s, e) = post(&app, "/v1/responses", body).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{why}: {e}");
            assert_eq!(e["error"]["param"], param, "{why}: {e}");
        }
    });
}

/// Bodies that are not the request at all: a 400 in the route's own shape on every route, and
/// the server healthy after.
#[test]
fn malformed_bodies_on_every_protocol_route() {
    runtime().block_on(async {
        let app = shared();
        let routes = [
            "/v1/responses",
            "/v1/messages",
            "/v1/messages/count_tokens",
            "/api/chat",
            "/api/generate",
            "/api/embed",
            "/api/embeddings",
            "/api/show",
            "/api/pull",
        ];
        let bodies = [
            "{oops",
            "[]",
            "null",
            "\"text\"",
            r#"{"model": 3}"#,
            r#"{"model": "smollm2", "messages": 7, "prompt": 7, "input": 7}"#,
        ];
        let json = ("content-type", "application/json");
        for path in routes {
            // The model routes read only the model's name.
            let n = if path == "/api/show" || path == "/api/pull" { bodies.len() - 1 } else { bodies.len() };
            for body in &bodies[..n] {
                let r = raw(&app, Method::POST, path, &[json], body.to_string()).await;
                let status = r.status();
                let e = json_of(r).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {e}");
                let shaped = match path {
                    p if p.starts_with("/api/") => e["error"].is_string(),
                    p if p.starts_with("/v1/messages") => {
                        e["type"] == "error" && e["error"]["type"] == "invalid_request_error"
                    }
                    _ => e["error"]["type"] == "invalid_request_error" && e["error"]["message"].is_string(),
                };
                assert!(shaped, "{path} {body}: {e}");
            }
            // Declared as something other than JSON: 415, same shape rules.
            let r = raw(&app, Method::POST, path, &[("content-type", "text/plain")], "{}".into()).await;
            assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path}");
        }
        // Still serving. The router is shared: another test may be loading its model right now,
        // which `/health` reports as 503 "loading".
        let (status, body) = get(&app, "/health").await;
        let loading = status == StatusCode::SERVICE_UNAVAILABLE && body.contains("\"loading\"");
        assert!(status == StatusCode::OK || loading, "{status} {body}");
    });
}

/// Ollama's `keep_alive` on a generation and on a bare load: `0` unloads once the reply is out.
#[test]
fn ollama_keep_alive_loads_and_unloads() {
    runtime().block_on(async {
        let registry = {
            let _guard = runtime().enter();
            Registry::new(vec![spec("smollm2")], config(1, 4), 1, KeepAlive::Forever, Duration::from_secs(60))
        };
        let app = routes::router(state(registry, None), None);
        let loaded = || async {
            let (_, ps) = get(&app, "/api/ps").await;
            serde_json::from_str::<Value>(&ps).unwrap()["models"].as_array().unwrap().len()
        };
        let unloaded = || async {
            for _ in 0..100 {
                if loaded().await == 0 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        };
        let body = json!({"model": "smollm2", "messages": user("Hi"), "stream": false, "keep_alive": 0,
                          "options": {"num_predict": 2}});
        let (s, r) = post(&app, "/api/chat", body).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert!(unloaded().await, "keep_alive 0 left the model loaded");
        let (_, r) = post(&app, "/api/generate", json!({"model": "smollm2", "keep_alive": "5m"})).await;
        assert_eq!(r["done_reason"], "load");
        assert_eq!(loaded().await, 1);
        let (_, r) = post(&app, "/api/generate", json!({"model": "smollm2", "keep_alive": 0})).await;
        assert_eq!(r["done_reason"], "unload");
        assert!(unloaded().await, "an unload request left the model loaded");
    });
}
