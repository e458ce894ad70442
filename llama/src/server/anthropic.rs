//! Anthropic's Messages API, `POST /v1/messages`, as the official `anthropic` SDKs and Claude
//! Code call it (base URL: the server's root, without `/v1`): the request mapped onto the same
//! [`Plan`] and chat as OpenAI's, the reply as a `message` object or as Anthropic's named SSE
//! events. The API key may come as `x-api-key`, as these clients send it.
//!
//! Fields are named and mean what Anthropic's API reference says; [`check()`] reads a body without any framework.
#![allow(missing_docs)]

use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::tools::{ChatDelta, ChatRequest, ToolChoice};
use crate::{ChatMessage, ToolCall};

use crate::server::access_log::RequestRecord;
use crate::server::body::{self, Limited};
use crate::server::check::{self, Chat, Checked, Input};
use crate::server::error::ApiError;
use crate::server::framing;
use crate::server::generation::{frames, new_id, Counts, Encode, Finish, Generation, Reply};
use crate::server::media::{self, Attached};
use crate::server::openai::{JsonSchemaFormat, Options, ResponseFormat, Stop};
use crate::server::plan::Plan;
use crate::server::routes::{self, AppState};
use crate::server::tools;

/// `POST /v1/messages`.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: Option<i64>,
    pub messages: Vec<InMessage>,
    /// A string or text blocks.
    pub system: Option<Value>,
    pub stop_sequences: Option<Vec<String>>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub stream: Option<bool>,
    pub tools: Option<Vec<ToolDef>>,
    pub tool_choice: Option<ToolChoiceIn>,
    pub output_config: Option<OutputConfig>,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    /// A string or content blocks.
    pub content: Value,
}

#[derive(Debug, Deserialize)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Option<Value>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ToolChoiceIn {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub disable_parallel_tool_use: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct OutputConfig {
    pub format: Option<OutputFormat>,
}

#[derive(Debug, Deserialize)]
pub struct OutputFormat {
    #[serde(rename = "type")]
    pub kind: String,
    pub schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct Metadata {
    pub user_id: Option<String>,
}

/// The reply (non-streaming), or the message of `message_start` (content still empty).
#[derive(Debug, Serialize)]
struct Message {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: String,
    content: Vec<Value>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<String>,
    usage: Usage,
}

#[derive(Debug, Serialize)]
struct Usage {
    /// Prompt tokens not read from the cache (Anthropic counts cache reads apart).
    input_tokens: usize,
    output_tokens: usize,
    cache_creation_input_tokens: usize,
    cache_read_input_tokens: usize,
}

fn usage(c: Counts) -> Usage {
    Usage {
        input_tokens: c.prompt_tokens - c.cached_tokens.min(c.prompt_tokens),
        output_tokens: c.completion_tokens,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: c.cached_tokens,
    }
}

fn stop_reason(f: Finish) -> &'static str {
    match f {
        Finish::EndOfTurn => "end_turn",
        Finish::StopSequence => "stop_sequence",
        Finish::Length => "max_tokens",
        Finish::ContextFull => "model_context_window_exceeded",
        Finish::ToolCalls => "tool_use",
    }
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

fn tool_use_block(call: &ToolCall, input: Value) -> Value {
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
}

/// `text` of a block, or a 400 naming it.
fn text_of<'a>(block: &'a Value, at: &str) -> Result<&'a str, ApiError> {
    block
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(format!("{at}.text"), "a text block needs `text`"))
}

/// A string, or text blocks joined: `system` and a tool result's `content`.
fn plain_text(value: &Value, at: &str) -> Result<String, ApiError> {
    match value {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for (j, b) in blocks.iter().enumerate() {
                let at = format!("{at}[{j}]");
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(text_of(b, &at)?),
                    other => return Err(unsupported_block(other, &at)),
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::invalid(at, "expected a string or an array of content blocks")),
    }
}

fn unsupported_block(kind: Option<&str>, at: &str) -> ApiError {
    match kind {
        Some("image") => ApiError::invalid(format!("{at}.type"), "image blocks are read in user messages only"),
        Some(k @ ("document" | "search_result")) => {
            ApiError::invalid(format!("{at}.type"), format!("{k} blocks are not supported by this server: send text"))
        }
        Some(k) => ApiError::invalid(format!("{at}.type"), format!("unknown content block type {k:?}")),
        None => ApiError::invalid(format!("{at}.type"), "a content block needs a `type`"),
    }
}

/// The conversation as chat messages: `system` first, tool results as tool messages ahead of
/// the text of their turn, tool uses as the assistant's calls.
fn chat(req: &MessagesRequest) -> Result<(Vec<ChatMessage>, Vec<Attached>), ApiError> {
    let mut out = Vec::with_capacity(req.messages.len() + 1);
    let mut attached = Vec::new();
    if let Some(system) = &req.system {
        let text = plain_text(system, "system")?;
        if !text.is_empty() {
            out.push(ChatMessage::system(text));
        }
    }
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must hold at least one message"));
    }
    for (i, m) in req.messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = match m.role.as_str() {
            r @ ("user" | "assistant" | "system") => r,
            other => {
                return Err(ApiError::invalid(
                    format!("{at}.role"),
                    format!("unknown role {other:?} (expected user or assistant)"),
                ))
            }
        };
        let blocks = match &m.content {
            Value::String(s) => {
                out.push(ChatMessage::new(role, s.clone()));
                continue;
            }
            Value::Array(blocks) => blocks,
            _ => {
                return Err(ApiError::invalid(
                    format!("{at}.content"),
                    "expected a string or an array of content blocks",
                ))
            }
        };
        let (mut text, mut calls, mut results, mut media) = (String::new(), Vec::new(), Vec::new(), Vec::new());
        for (j, b) in blocks.iter().enumerate() {
            let at = format!("{at}.content[{j}]");
            let field = |name: &str| body::required_str(b, &at, name);
            match b.get("type").and_then(Value::as_str) {
                Some("text") => text.push_str(text_of(b, &at)?),
                Some("image") if role == "user" => {
                    let bytes = image_source(b, &at)?;
                    media.push(Attached { param: format!("{at}.type"), message: 0, offset: text.len(), bytes });
                }
                Some("tool_use") if role == "assistant" => {
                    let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                    calls.push(ToolCall { id: field("id")?, name: field("name")?, arguments: input.to_string() });
                }
                Some("tool_result") if role == "user" => {
                    let mut content = plain_text(b.get("content").unwrap_or(&Value::Null), &format!("{at}.content"))?;
                    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                        content = format!("Error: {content}");
                    }
                    results.push(ChatMessage::tool_result(field("tool_use_id")?, content));
                }
                Some(k @ ("tool_use" | "tool_result")) => {
                    let turn = if k == "tool_use" { "assistant" } else { "user" };
                    return Err(ApiError::invalid(
                        format!("{at}.type"),
                        format!("{k} blocks belong in {turn} messages"),
                    ));
                }
                // Thinking echoed back from an earlier reply: the template does not take it.
                Some("thinking" | "redacted_thinking") => {}
                other => return Err(unsupported_block(other, &at)),
            }
        }
        let had_results = !results.is_empty();
        out.extend(results);
        if !text.is_empty() || !calls.is_empty() || !had_results || !media.is_empty() {
            attached.extend(media.into_iter().map(|m| Attached { message: out.len(), ..m }));
            let mut message = ChatMessage::new(role, text);
            message.tool_calls = calls;
            out.push(message);
        }
    }
    Ok((out, attached))
}

/// The bytes of an `image` block's `source`: base64 only (a URL is not fetched).
fn image_source(block: &Value, at: &str) -> Result<Vec<u8>, ApiError> {
    let at = format!("{at}.source");
    match block.pointer("/source/type").and_then(Value::as_str) {
        Some("base64") => {
            let data = block.pointer("/source/data").and_then(Value::as_str);
            let data = data.ok_or_else(|| ApiError::invalid(format!("{at}.data"), "a base64 source needs `data`"))?;
            media::base64(&format!("{at}.data"), data)
        }
        Some("url") => Err(ApiError::invalid(
            format!("{at}.type"),
            "image URLs are not fetched by this server: send the image as a base64 source",
        )),
        other => Err(ApiError::invalid(
            format!("{at}.type"),
            format!("unsupported image source {other:?} (expected \"base64\")"),
        )),
    }
}

/// The library request when the body carries tools (`None`: a plain chat).
fn tool_request(req: &MessagesRequest, messages: Vec<ChatMessage>) -> Result<Option<ChatRequest>, ApiError> {
    let defs = req.tools.as_deref().unwrap_or_default();
    let choice = req.tool_choice.as_ref();
    if defs.is_empty() {
        return match choice.map(|c| c.kind.as_str()) {
            None | Some("auto" | "none") => Ok(None),
            Some(_) => Err(ApiError::invalid("tool_choice", "`tool_choice` needs `tools`")),
        };
    }
    let mut tools_out = Vec::with_capacity(defs.len());
    for (i, d) in defs.iter().enumerate() {
        if let Some(kind) = d.kind.as_deref().filter(|k| *k != "custom") {
            return Err(ApiError::invalid(
                format!("tools[{i}].type"),
                format!("server tools ({kind:?}) are not available here: define functions with `input_schema`"),
            ));
        }
        let at = format!("tools[{i}].input_schema");
        tools_out.push(tools::tool(&at, &d.name, d.description.as_deref(), d.input_schema.as_ref())?);
    }
    let tool_choice = match choice.map(|c| (c.kind.as_str(), c.name.as_deref())) {
        None | Some(("auto", _)) => ToolChoice::Auto,
        Some(("any", _)) => ToolChoice::Required,
        Some(("none", _)) => ToolChoice::None,
        Some(("tool", Some(name))) => ToolChoice::Function(name.to_string()),
        Some(("tool", None)) => return Err(ApiError::invalid("tool_choice.name", "`tool` needs the tool's `name`")),
        Some((other, _)) => {
            return Err(ApiError::invalid(
                "tool_choice.type",
                format!("expected \"auto\", \"any\", \"tool\" or \"none\", got {other:?}"),
            ))
        }
    };
    let parallel = !choice.and_then(|c| c.disable_parallel_tool_use).unwrap_or(false);
    Ok(Some(ChatRequest::new(messages).tools(tools_out).tool_choice(tool_choice).parallel_tool_calls(parallel)))
}

/// `POST /v1/messages`'s body, checked.
pub fn check(body: &[u8]) -> Result<Checked, ApiError> {
    checked(body, true)
}

/// A body checked for generating, or (`/count_tokens`, where `max_tokens` is not sent) only
/// for reading.
fn checked(body: &[u8], generating: bool) -> Result<Checked, ApiError> {
    let req: MessagesRequest = body::parse(body)?;
    let max_tokens = match req.max_tokens {
        Some(v) => Some(("max_tokens", v)),
        None if generating => return Err(ApiError::invalid("max_tokens", "`max_tokens` is required")),
        None => None,
    };
    let format = match req.output_config.as_ref().and_then(|o| o.format.as_ref()) {
        None => None,
        Some(f) if f.kind == "json_schema" => {
            Some(ResponseFormat::JsonSchema { json_schema: JsonSchemaFormat { schema: f.schema.clone() } })
        }
        Some(f) => {
            return Err(ApiError::invalid(
                "output_config.format.type",
                format!("expected \"json_schema\", got {:?}", f.kind),
            ))
        }
    };
    let options = Options {
        model: Some(req.model.clone()),
        stream: req.stream,
        stop: req.stop_sequences.clone().map(Stop),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        user: req.metadata.as_ref().and_then(|m| m.user_id.clone()),
        ..Options::default()
    };
    let plan = Plan::new(&options, max_tokens, None, format.as_ref())?.cap_to_context();
    let (messages, media) = chat(&req)?;
    let tools = tool_request(&req, messages.clone())?;
    let talk = Chat {
        messages,
        media,
        tools,
        logprobs: false,
        prompt_param: "messages",
        format_param: "output_config.format",
    };
    talk.checked(plan, options.user)
}

pub(crate) async fn messages(
    State(s): State<AppState>,
    Extension(record): Extension<Arc<RequestRecord>>,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
    let checked = check(&body)?;
    let stream = checked.plan.stream;
    let g = routes::admit(&s, record, checked).await?;
    if stream {
        return Ok(events(g));
    }
    let done = g.collect().await?;
    let choice = done.choices.into_iter().next().unwrap_or_default();
    let mut content = Vec::new();
    if let Some(thinking) = choice.reasoning.filter(|r| !r.is_empty()) {
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
    }
    if !choice.content.is_empty() || choice.calls.is_empty() {
        content.push(text_block(&choice.content));
    }
    for call in &choice.calls {
        let input = serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
        content.push(tool_use_block(call, input));
    }
    let finish = choice.finish.unwrap_or(Finish::EndOfTurn);
    Ok(Json(Message {
        id: new_id("msg_"),
        kind: "message",
        role: "assistant",
        model: done.model,
        content,
        stop_reason: Some(stop_reason(finish)),
        stop_sequence: choice.stop.filter(|_| finish == Finish::StopSequence),
        usage: usage(done.counts),
    })
    .into_response())
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as the model's template renders it.
pub(crate) async fn count_tokens(State(s): State<AppState>, Limited(body): Limited) -> Result<Response, ApiError> {
    let checked = checked(&body, false)?;
    let lease = s.registry.acquire(checked.plan.model.as_deref(), checked.plan.keep_alive).await?;
    let model = lease.model.clone();
    let engine = lease.engine();
    // With its media, as a reply's usage counts them.
    let input = match checked.input {
        Input::Prompt(prompt) => Ok(media::request(&lease, prompt, checked.media).await?),
        Input::Tools(tools) => Err(tools),
    };
    let count = tokio::task::spawn_blocking(move || match input {
        Ok(request) => engine.tokenize(&request).map(|t| t.len()).map_err(|e| ApiError::from_submit(e, "messages")),
        Err(tools) => check::render_tools(&model, &tools, Vec::new()).map(|(r, _)| r.tokens.len()),
    })
    .await
    .map_err(|e| ApiError::internal(format!("counting failed: {e}")))??;
    Ok(Json(json!({ "input_tokens": count })).into_response())
}

/// The stream: `message_start`, each content block's start, deltas and stop, `message_delta`
/// with the stop reason and usage, `message_stop`; `ping` while idle.
fn events(g: Generation) -> Response {
    let start = Message {
        id: new_id("msg_"),
        kind: "message",
        role: "assistant",
        model: g.model_name().to_string(),
        content: Vec::new(),
        stop_reason: None,
        stop_sequence: None,
        usage: usage(g.counts()),
    };
    let first = vec![framing::event(Some("message_start"), &json!({"type": "message_start", "message": start}))];
    let ping = framing::event(Some("ping"), &json!({"type": "ping"}));
    framing::sse(frames(g, first, Blocks { open: None, next: 0 }), Some(ping))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    Tool,
}

/// The content block being streamed, and the index the next one gets.
struct Blocks {
    open: Option<Block>,
    next: usize,
}

impl Blocks {
    /// Makes sure a block of `kind` is open (a tool use always starts its own).
    fn open(&mut self, kind: Block, start: Value, out: &mut Vec<SseEvent>) {
        if self.open == Some(kind) && kind != Block::Tool {
            return;
        }
        self.close(out);
        let index = self.next;
        out.push(framing::event(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        self.open = Some(kind);
    }

    fn close(&mut self, out: &mut Vec<SseEvent>) {
        if self.open.take().is_some() {
            let index = self.next;
            out.push(framing::event(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": index}),
            ));
            self.next += 1;
        }
    }

    fn delta(&self, delta: Value, out: &mut Vec<SseEvent>) {
        let event = json!({"type": "content_block_delta", "index": self.next, "delta": delta});
        out.push(framing::event(Some("content_block_delta"), &event));
    }
}

impl Encode for Blocks {
    type Frame = SseEvent;

    fn reply(&mut self, g: &Generation, reply: Reply, out: &mut Vec<SseEvent>) {
        match reply {
            Reply::Piece { deltas, .. } => {
                for d in deltas {
                    match d {
                        ChatDelta::Content(text) => {
                            self.open(Block::Text, text_block(""), out);
                            self.delta(json!({"type": "text_delta", "text": text}), out);
                        }
                        ChatDelta::Reasoning(text) => {
                            let start = json!({"type": "thinking", "thinking": "", "signature": ""});
                            self.open(Block::Thinking, start, out);
                            self.delta(json!({"type": "thinking_delta", "thinking": text}), out);
                        }
                        ChatDelta::ToolCallStart { id, name, .. } => {
                            let call = ToolCall { id, name, arguments: String::new() };
                            self.open(Block::Tool, tool_use_block(&call, json!({})), out);
                        }
                        ChatDelta::ToolCallArguments { fragment, .. } => {
                            self.delta(json!({"type": "input_json_delta", "partial_json": fragment}), out);
                        }
                    }
                }
            }
            Reply::Done { finish, stop, .. } => {
                if self.open.is_none() && self.next == 0 {
                    // Every reply has a block, even an empty one.
                    self.open(Block::Text, text_block(""), out);
                }
                self.close(out);
                let stop = stop.filter(|_| finish == Finish::StopSequence);
                let event = json!({
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason(finish), "stop_sequence": stop},
                    "usage": {"output_tokens": g.counts().completion_tokens},
                });
                out.push(framing::event(Some("message_delta"), &event));
            }
        }
    }

    fn end(&mut self, _: &Generation, out: &mut Vec<SseEvent>) {
        out.push(framing::event(Some("message_stop"), &json!({"type": "message_stop"})));
    }

    fn fail(&mut self, _: &Generation, error: ApiError, out: &mut Vec<SseEvent>) {
        out.push(framing::event(Some("error"), &error.anthropic_body()));
    }
}
