//! OpenAI's Responses API, `POST /v1/responses`, stateless (`store: false` semantics): `input`
//! as text or as message and function-call items, `instructions`, `text.format`, function
//! tools; the reply as a `response` object or as its documented event stream
//! (`response.created` … `response.output_text.delta` … `response.completed`). Nothing is
//! stored, so `previous_response_id` and item references are refused.
//!
//! Fields are named and mean what OpenAI's API reference says; [`check()`] reads a body without any framework.
#![allow(missing_docs)]

use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::tools::ChatDelta;
use crate::{ChatMessage, ToolCall};

use crate::server::access_log::RequestRecord;
use crate::server::body::{self, Limited};
use crate::server::check::{Chat, Checked};
use crate::server::error::ApiError;
use crate::server::framing;
use crate::server::generation::{frames, new_id, unix_now, Counts, Encode, Finish, Generation, Reply};
use crate::server::media::{self, Attached};
use crate::server::openai::{FunctionDef, JsonSchemaFormat, Options, ResponseFormat, TokenLogprob, ToolDef};
use crate::server::plan::{self, Plan};
use crate::server::routes::{self, AppState};
use crate::server::tools;

/// `POST /v1/responses` (the sampling fields, and this server's extensions such as `seed`
/// and `top_k`, are read as [`Options`] from the same body).
#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    /// A string (one user message) or a list of items.
    pub input: Option<Value>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub top_logprobs: Option<i64>,
    pub include: Option<Vec<String>>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub text: Option<TextConfig>,
    pub previous_response_id: Option<String>,
    pub background: Option<bool>,
    pub conversation: Option<Value>,
    pub prompt: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct TextConfig {
    pub format: Option<Value>,
}

/// What the response object repeats from the request.
struct Echo {
    fields: serde_json::Map<String, Value>,
}

fn usage(c: Counts) -> Value {
    json!({
        "input_tokens": c.prompt_tokens,
        "input_tokens_details": {"cached_tokens": c.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": c.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    })
}

/// Text of a content list's parts (`input_text`, `output_text`, `refusal`), or a string; no
/// media.
fn content_text(content: &Value, at: &str) -> Result<String, ApiError> {
    let (text, media) = content_with_media(content, at)?;
    match media.first() {
        Some(m) => Err(ApiError::invalid(&m.param, "images and audio are read in user messages only")),
        None => Ok(text),
    }
}

/// [`content_text`] with the images (`input_image` data URLs) and audio (`input_audio`) among
/// the parts, each placed where it stood (its message index is the caller's to set).
fn content_with_media(content: &Value, at: &str) -> Result<(String, Vec<Attached>), ApiError> {
    let mut media = Vec::new();
    match content {
        Value::String(s) => Ok((s.clone(), media)),
        Value::Null => Ok((String::new(), media)),
        Value::Array(parts) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                let at = format!("{at}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => text.push_str(
                        p.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| ApiError::invalid(format!("{at}.text"), "a text part needs `text`"))?,
                    ),
                    Some("refusal") => text.push_str(p.get("refusal").and_then(Value::as_str).unwrap_or_default()),
                    Some("input_image") => {
                        let url = p.get("image_url").and_then(Value::as_str).ok_or_else(|| {
                            ApiError::invalid(
                                format!("{at}.image_url"),
                                "an input_image part needs an `image_url` (a data: URL)",
                            )
                        })?;
                        let bytes = media::data_url(&format!("{at}.image_url"), url)?;
                        media.push(Attached { param: format!("{at}.type"), message: 0, offset: text.len(), bytes });
                    }
                    Some("input_audio") => {
                        let data = p.pointer("/input_audio/data").and_then(Value::as_str).ok_or_else(|| {
                            ApiError::invalid(
                                format!("{at}.input_audio.data"),
                                "an input_audio part needs `input_audio.data`",
                            )
                        })?;
                        let bytes = media::base64(&format!("{at}.input_audio.data"), data)?;
                        media.push(Attached { param: format!("{at}.type"), message: 0, offset: text.len(), bytes });
                    }
                    Some(k @ "input_file") => {
                        return Err(ApiError::invalid(
                            format!("{at}.type"),
                            format!("{k} parts are not supported by this server: send text"),
                        ))
                    }
                    other => {
                        return Err(ApiError::invalid(
                            format!("{at}.type"),
                            format!("unknown content part type {other:?}"),
                        ))
                    }
                }
            }
            Ok((text, media))
        }
        _ => Err(ApiError::invalid(at, "expected a string or an array of content parts")),
    }
}

/// `instructions` and `input` as chat messages. Function calls join the assistant turn
/// before them; their outputs become tool messages.
fn chat(req: &ResponsesRequest) -> Result<(Vec<ChatMessage>, Vec<Attached>), ApiError> {
    let mut out = Vec::new();
    let mut attached = Vec::new();
    if let Some(i) = req.instructions.as_deref().filter(|i| !i.is_empty()) {
        out.push(ChatMessage::system(i));
    }
    let items = match &req.input {
        None | Some(Value::Null) => return Err(ApiError::invalid("input", "`input` is required")),
        Some(Value::String(s)) => {
            out.push(ChatMessage::user(s.clone()));
            return Ok((out, attached));
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::invalid("input", "expected a string or an array of input items")),
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let field = |name: &str| body::required_str(item, &at, name);
        let kind = item.get("type").and_then(Value::as_str);
        match kind {
            None | Some("message") => {
                let role = field("role")?;
                let role = match role.as_str() {
                    "developer" | "system" => "system",
                    r @ ("user" | "assistant") => r,
                    other => {
                        return Err(ApiError::invalid(
                            format!("{at}.role"),
                            format!("unknown role {other:?} (expected user, assistant, system or developer)"),
                        ))
                    }
                };
                let content = item.get("content").unwrap_or(&Value::Null);
                let text = if role == "user" {
                    let (text, media) = content_with_media(content, &format!("{at}.content"))?;
                    attached.extend(media.into_iter().map(|m| Attached { message: out.len(), ..m }));
                    text
                } else {
                    content_text(content, &format!("{at}.content"))?
                };
                out.push(ChatMessage::new(role, text));
            }
            Some("function_call") => {
                let call = ToolCall { id: field("call_id")?, name: field("name")?, arguments: field("arguments")? };
                match out.last_mut() {
                    Some(m) if m.role == "assistant" => m.tool_calls.push(call),
                    _ => out.push(ChatMessage::assistant_tool_calls("", vec![call])),
                }
            }
            Some("function_call_output") => {
                let output = content_text(item.get("output").unwrap_or(&Value::Null), &format!("{at}.output"))?;
                out.push(ChatMessage::tool_result(field("call_id")?, output));
            }
            // Reasoning echoed from an earlier response: templates do not take it back.
            Some("reasoning") => {}
            Some("item_reference") => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    "item references need stored responses, and this server stores none: send the items themselves",
                ))
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    format!("input items of type {other:?} are not supported"),
                ))
            }
        }
    }
    if out.iter().all(|m| m.role == "system") {
        return Err(ApiError::invalid("input", "`input` must hold at least one message"));
    }
    Ok((out, attached))
}

/// Function tools (flat in this API) in chat's form, and `tool_choice` likewise.
fn tool_defs(req: &ResponsesRequest) -> Result<(Vec<ToolDef>, Option<Value>), ApiError> {
    let mut defs = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        let kind = t.get("type").and_then(Value::as_str).unwrap_or_default();
        if kind != "function" {
            return Err(ApiError::invalid(
                format!("tools[{i}].type"),
                format!("only function tools are available here, got {kind:?}"),
            ));
        }
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid(format!("tools[{i}].name"), "a function tool needs `name`"))?;
        defs.push(ToolDef {
            kind: "function".into(),
            function: FunctionDef {
                name: name.to_string(),
                description: t.get("description").and_then(Value::as_str).map(str::to_string),
                parameters: t.get("parameters").filter(|p| !p.is_null()).cloned(),
            },
        });
    }
    let choice = match &req.tool_choice {
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.get("name").cloned().unwrap_or(Value::Null);
            Some(json!({"type": "function", "function": {"name": name}}))
        }
        Some(Value::Object(_)) => {
            return Err(ApiError::invalid(
                "tool_choice",
                "expected \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\": ...}",
            ))
        }
        other => other.clone(),
    };
    Ok((defs, choice))
}

fn text_format(req: &ResponsesRequest) -> Result<Option<ResponseFormat>, ApiError> {
    let Some(format) = req.text.as_ref().and_then(|t| t.format.as_ref()) else { return Ok(None) };
    Ok(match format.get("type").and_then(Value::as_str) {
        Some("text") => None,
        Some("json_object") => Some(ResponseFormat::JsonObject),
        Some("json_schema") => match format.get("schema") {
            Some(schema) if schema.is_object() => {
                Some(ResponseFormat::JsonSchema { json_schema: JsonSchemaFormat { schema: Some(schema.clone()) } })
            }
            _ => return Err(ApiError::invalid("text.format.schema", "a json_schema format needs a `schema` object")),
        },
        other => {
            return Err(ApiError::invalid(
                "text.format.type",
                format!("expected \"text\", \"json_object\" or \"json_schema\", got {other:?}"),
            ))
        }
    })
}

/// `POST /v1/responses`'s body, checked.
pub fn check(body: &[u8]) -> Result<Checked, ApiError> {
    checked(body).map(|(c, _)| c)
}

/// The body checked, and what the response repeats from it.
fn checked(body: &[u8]) -> Result<(Checked, Echo), ApiError> {
    let req: ResponsesRequest = body::parse(body)?;
    let mut options: Options = body::parse(body)?;
    if req.previous_response_id.is_some() {
        return Err(ApiError::invalid(
            "previous_response_id",
            "this server stores no responses: send the whole conversation in `input`",
        ));
    }
    for (param, given) in [
        ("background", req.background == Some(true)),
        ("conversation", req.conversation.as_ref().is_some_and(|c| !c.is_null())),
        ("prompt", req.prompt.as_ref().is_some_and(|p| !p.is_null())),
    ] {
        if given {
            return Err(ApiError::invalid(param, format!("`{param}` is not supported by this server")));
        }
    }
    // Fields of chat completions that this API does not have.
    (options.n, options.max_tokens, options.stop, options.stream_options) = (None, None, None, None);
    let wants_logprobs = req.include.iter().flatten().any(|i| i == "message.output_text.logprobs");
    let logprobs = plan::chat_logprobs(Some(wants_logprobs), req.top_logprobs.filter(|_| wants_logprobs))?;
    let format = text_format(&req)?;
    let max_tokens = req.max_output_tokens.map(|v| ("max_output_tokens", v));
    let plan = Plan::new(&options, max_tokens, logprobs, format.as_ref())?.cap_to_context();
    let (messages, media) = chat(&req)?;
    let (defs, choice) = tool_defs(&req)?;
    let parallel = req.parallel_tool_calls.unwrap_or(true);
    let tools = tools::request(&defs, choice.as_ref(), parallel, messages.clone())?;
    let talk = Chat {
        messages,
        media,
        tools,
        logprobs: logprobs.is_some(),
        prompt_param: "input",
        format_param: "text.format",
    };
    let checked = talk.checked(plan, options.user.clone())?;
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut fields = serde_json::Map::new();
    for (key, default) in [
        ("instructions", Value::Null),
        ("max_output_tokens", Value::Null),
        ("temperature", Value::Null),
        ("top_p", Value::Null),
        ("top_logprobs", Value::Null),
        ("tools", json!([])),
        ("tool_choice", json!("auto")),
        ("parallel_tool_calls", json!(true)),
        ("text", json!({"format": {"type": "text"}})),
        ("metadata", json!({})),
        ("user", Value::Null),
        ("reasoning", Value::Null),
    ] {
        let value = body.get(key).filter(|v| !v.is_null()).cloned().unwrap_or(default);
        fields.insert(key.into(), value);
    }
    fields.insert("store".into(), json!(false));
    fields.insert("previous_response_id".into(), Value::Null);
    fields.insert("truncation".into(), json!("disabled"));
    Ok((checked, Echo { fields }))
}

/// The response object with the request's echoed fields.
fn response(id: &str, created: u64, model: &str, echo: &Echo, state: Stage) -> Value {
    let mut r = serde_json::Map::new();
    r.insert("id".into(), json!(id));
    r.insert("object".into(), json!("response"));
    r.insert("created_at".into(), json!(created));
    r.insert("model".into(), json!(model));
    r.extend(echo.fields.clone());
    let (status, output, usage_v, incomplete, error, completed_at) = match state {
        Stage::InProgress => ("in_progress", Vec::new(), Value::Null, Value::Null, Value::Null, Value::Null),
        Stage::Finished { output, finish, counts } => {
            let (status, incomplete) = if finish.truncated() {
                ("incomplete", json!({"reason": "max_output_tokens"}))
            } else {
                ("completed", Value::Null)
            };
            (status, output, usage(counts), incomplete, Value::Null, json!(unix_now()))
        }
        Stage::Failed { output, error } => (
            "failed",
            output,
            Value::Null,
            Value::Null,
            json!({"code": "server_error", "message": error.message}),
            Value::Null,
        ),
    };
    r.insert("status".into(), json!(status));
    r.insert("output".into(), Value::Array(output));
    r.insert("usage".into(), usage_v);
    r.insert("incomplete_details".into(), incomplete);
    r.insert("error".into(), error);
    r.insert("completed_at".into(), completed_at);
    Value::Object(r)
}

enum Stage {
    InProgress,
    Finished { output: Vec<Value>, finish: Finish, counts: Counts },
    Failed { output: Vec<Value>, error: ApiError },
}

fn text_part(text: &str, logprobs: &[TokenLogprob]) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs})
}

fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"type": "message", "id": id, "role": "assistant", "status": status, "content": content})
}

fn call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({
        "type": "function_call", "id": id, "call_id": call.id, "name": call.name,
        "arguments": call.arguments, "status": status,
    })
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [], "content": [{"type": "reasoning_text", "text": text}]})
}

pub(crate) async fn create(
    State(s): State<AppState>,
    Extension(record): Extension<Arc<RequestRecord>>,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
    let (checked, echo) = checked(&body)?;
    let stream = checked.plan.stream;
    let g = routes::admit(&s, record, checked).await?;
    let (id, created) = (new_id("resp_"), unix_now());
    if stream {
        let model = g.model_name().to_string();
        let mut events = Events { id, created, model, echo, seq: 0, output: Vec::new(), open: None, finish: None };
        let snapshot = events.snapshot(Stage::InProgress);
        let first = vec![
            events.event("response.created", json!({"response": snapshot})),
            events.event("response.in_progress", json!({"response": snapshot})),
        ];
        return Ok(framing::sse(frames(g, first, events), None));
    }
    let done = g.collect().await?;
    let c = done.choices.into_iter().next().unwrap_or_default();
    let finish = c.finish.unwrap_or(Finish::EndOfTurn);
    let mut output = Vec::new();
    if let Some(r) = c.reasoning.filter(|r| !r.is_empty()) {
        output.push(reasoning_item(&new_id("rs_"), &r));
    }
    if !c.content.is_empty() || c.calls.is_empty() {
        let logprobs: Vec<TokenLogprob> = c.logprobs.into_iter().map(|(_, lp)| lp).collect();
        let status = if finish.truncated() { "incomplete" } else { "completed" };
        output.push(message_item(&new_id("msg_"), status, vec![text_part(&c.content, &logprobs)]));
    }
    for call in &c.calls {
        output.push(call_item(&new_id("fc_"), call, "completed"));
    }
    let state = Stage::Finished { output, finish, counts: done.counts };
    Ok(Json(response(&id, created, &done.model, &echo, state)).into_response())
}

/// The output item being streamed.
struct Open {
    kind: ItemKind,
    index: usize,
    id: String,
    text: String,
    logprobs: Vec<TokenLogprob>,
    call: Option<ToolCall>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    Message,
    Reasoning,
    Call,
}

/// The event stream: numbered events, one output item open at a time, every finished item
/// kept for the final `response.completed`.
struct Events {
    id: String,
    created: u64,
    model: String,
    echo: Echo,
    seq: u64,
    output: Vec<Value>,
    open: Option<Open>,
    finish: Option<Finish>,
}

impl Events {
    fn snapshot(&self, state: Stage) -> Value {
        response(&self.id, self.created, &self.model, &self.echo, state)
    }

    fn event(&mut self, kind: &str, mut body: Value) -> SseEvent {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.seq);
        self.seq += 1;
        framing::event(Some(kind), &body)
    }

    /// Makes sure an item of `kind` is open (a function call always opens its own).
    fn open(&mut self, kind: ItemKind, call: Option<ToolCall>, out: &mut Vec<SseEvent>) {
        if self.open.as_ref().is_some_and(|o| o.kind == kind) && kind != ItemKind::Call {
            return;
        }
        self.close(false, out);
        let index = self.output.len();
        let id = new_id(match kind {
            ItemKind::Message => "msg_",
            ItemKind::Reasoning => "rs_",
            ItemKind::Call => "fc_",
        });
        let item = match (&kind, &call) {
            (ItemKind::Message, _) => message_item(&id, "in_progress", Vec::new()),
            (ItemKind::Reasoning, _) => json!({"type": "reasoning", "id": id, "summary": [], "content": []}),
            (ItemKind::Call, Some(c)) => call_item(&id, c, "in_progress"),
            (ItemKind::Call, None) => return,
        };
        let added = self.event("response.output_item.added", json!({"output_index": index, "item": item}));
        out.push(added);
        if kind == ItemKind::Message {
            let part = text_part("", &[]);
            let body = json!({"item_id": id, "output_index": index, "content_index": 0, "part": part});
            out.push(self.event("response.content_part.added", body));
        }
        self.open = Some(Open { kind, index, id, text: String::new(), logprobs: Vec::new(), call });
    }

    /// Finishes the open item: its `.done` events, and it joins the output.
    fn close(&mut self, truncated: bool, out: &mut Vec<SseEvent>) {
        let Some(o) = self.open.take() else { return };
        let (index, id) = (o.index, o.id.clone());
        let item = match o.kind {
            ItemKind::Message => {
                let body = json!({
                    "item_id": id, "output_index": index, "content_index": 0,
                    "text": o.text, "logprobs": o.logprobs,
                });
                out.push(self.event("response.output_text.done", body));
                let part = text_part(&o.text, &o.logprobs);
                let body = json!({"item_id": id, "output_index": index, "content_index": 0, "part": part});
                out.push(self.event("response.content_part.done", body));
                message_item(&id, if truncated { "incomplete" } else { "completed" }, vec![part])
            }
            ItemKind::Reasoning => {
                let body = json!({"item_id": id, "output_index": index, "content_index": 0, "text": o.text});
                out.push(self.event("response.reasoning_text.done", body));
                reasoning_item(&id, &o.text)
            }
            ItemKind::Call => {
                let call = o.call.unwrap_or_default();
                let body = json!({
                    "item_id": id, "output_index": index, "name": call.name, "arguments": call.arguments,
                });
                out.push(self.event("response.function_call_arguments.done", body));
                call_item(&id, &call, "completed")
            }
        };
        out.push(self.event("response.output_item.done", json!({"output_index": index, "item": item})));
        self.output.push(item);
    }
}

impl Encode for Events {
    type Frame = SseEvent;

    fn reply(&mut self, _: &Generation, reply: Reply, out: &mut Vec<SseEvent>) {
        match reply {
            Reply::Piece { mut deltas, logprob, .. } => {
                if deltas.is_empty() && logprob.is_some() {
                    deltas.push(ChatDelta::Content(String::new()));
                }
                let mut logprob = logprob;
                for d in deltas {
                    match d {
                        ChatDelta::Content(text) => {
                            self.open(ItemKind::Message, None, out);
                            let Some(o) = self.open.as_mut() else { continue };
                            o.text.push_str(&text);
                            let lp: Vec<TokenLogprob> = logprob.take().into_iter().collect();
                            o.logprobs.extend(lp.iter().cloned());
                            let body = json!({
                                "item_id": o.id, "output_index": o.index, "content_index": 0,
                                "delta": text, "logprobs": lp,
                            });
                            out.push(self.event("response.output_text.delta", body));
                        }
                        ChatDelta::Reasoning(text) => {
                            self.open(ItemKind::Reasoning, None, out);
                            let Some(o) = self.open.as_mut() else { continue };
                            o.text.push_str(&text);
                            let body =
                                json!({"item_id": o.id, "output_index": o.index, "content_index": 0, "delta": text});
                            out.push(self.event("response.reasoning_text.delta", body));
                        }
                        ChatDelta::ToolCallStart { id, name, .. } => {
                            let call = ToolCall { id, name, arguments: String::new() };
                            self.open(ItemKind::Call, Some(call), out);
                        }
                        ChatDelta::ToolCallArguments { fragment, .. } => {
                            let Some(o) = self.open.as_mut().filter(|o| o.kind == ItemKind::Call) else { continue };
                            if let Some(c) = o.call.as_mut() {
                                c.arguments.push_str(&fragment);
                            }
                            let body = json!({"item_id": o.id, "output_index": o.index, "delta": fragment});
                            out.push(self.event("response.function_call_arguments.delta", body));
                        }
                    }
                }
            }
            Reply::Done { finish, .. } => {
                if self.open.is_none() && self.output.is_empty() {
                    // Every reply has a message, even an empty one.
                    self.open(ItemKind::Message, None, out);
                }
                self.close(finish.truncated(), out);
                self.finish = Some(finish);
            }
        }
    }

    fn end(&mut self, g: &Generation, out: &mut Vec<SseEvent>) {
        let finish = self.finish.unwrap_or(Finish::EndOfTurn);
        let state = Stage::Finished { output: std::mem::take(&mut self.output), finish, counts: g.counts() };
        let kind = if finish.truncated() { "response.incomplete" } else { "response.completed" };
        let snapshot = self.snapshot(state);
        out.push(self.event(kind, json!({"response": snapshot})));
    }

    fn fail(&mut self, _: &Generation, error: ApiError, out: &mut Vec<SseEvent>) {
        self.close(true, out);
        let state = Stage::Failed { output: std::mem::take(&mut self.output), error };
        let snapshot = self.snapshot(state);
        out.push(self.event("response.failed", json!({"response": snapshot})));
    }
}
