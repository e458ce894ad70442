//! Ollama's native API under `/api/`, as the `ollama` Python and JavaScript packages, chat UIs
//! and editors call it (base URL: the server's root): chat and generate (streamed as
//! newline-delimited JSON by default, as Ollama does), embeddings, and the model listings. A
//! request maps onto the same [`Plan`] and chat as OpenAI's; its `options` use Ollama's names
//! (`num_predict`, `temperature`, `top_k`, ...) and unknown ones are ignored, as Ollama does.
//! Models are the server's configured ones: `/api/pull` and the other model-management routes
//! say so instead of downloading.
//!
//! Fields are named and mean what Ollama's API reference says; [`check()`] reads a body without any framework.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::engine::Prompt;
use crate::tools::ChatDelta;
use crate::{ChatMessage, Model, ToolCall};

use crate::server::access_log::RequestRecord;
use crate::server::body::{self, JsonBody, Limited};
use crate::server::check::{Chat, Checked, Input};
use crate::server::error::ApiError;
use crate::server::framing;
use crate::server::generation::{frames, Counts, Encode, Finish, Generation, Reply, Shape};
use crate::server::keep_alive::KeepAlive;
use crate::server::media::{self, Attached};
use crate::server::openai::{JsonSchemaFormat, KeepAliveValue, Options, ResponseFormat, Stop, ToolDef};
use crate::server::plan::{self, Plan};
use crate::server::registry::{Listed, Loaded};
use crate::server::routes::{self, AppState};
use crate::server::tools;

/// The Ollama release whose API this module follows, for clients that check the version
/// before using a feature.
const API_VERSION: &str = "0.13.0";

/// `options`: the sampling and length ones are honoured; load-time ones (`num_ctx`,
/// `num_gpu`, ...) are the server's to set, and unknown ones are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct ModelOptions {
    pub temperature: Option<f64>,
    pub top_k: Option<i64>,
    pub top_p: Option<f64>,
    pub min_p: Option<f64>,
    pub seed: Option<i64>,
    /// Tokens at most; -1 (or any value below 1) for "until the context ends".
    pub num_predict: Option<i64>,
    pub stop: Option<Stop>,
    pub repeat_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
}

/// What `/api/chat` and `/api/generate` share.
#[derive(Debug, Deserialize)]
pub struct Common {
    pub model: String,
    pub stream: Option<bool>,
    /// `""`, `"json"` or a JSON Schema.
    pub format: Option<Value>,
    pub options: Option<ModelOptions>,
    pub keep_alive: Option<KeepAliveValue>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
}

/// `POST /api/chat`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub messages: Vec<InMessage>,
    pub tools: Option<Vec<ToolDef>>,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    pub content: Option<String>,
    pub thinking: Option<String>,
    pub images: Option<Vec<Value>>,
    pub tool_calls: Option<Vec<InToolCall>>,
    pub tool_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct InToolCall {
    pub function: InFunction,
}

#[derive(Debug, Deserialize)]
pub struct InFunction {
    pub name: String,
    /// An object (Ollama's form) or JSON text.
    pub arguments: Value,
}

/// `POST /api/generate`.
#[derive(Debug, Deserialize)]
pub struct GenerateRequest {
    pub prompt: Option<String>,
    pub system: Option<String>,
    /// The prompt as it is, without the chat template.
    pub raw: Option<bool>,
    pub suffix: Option<String>,
    pub template: Option<String>,
    pub context: Option<Vec<i64>>,
    pub images: Option<Vec<Value>>,
}

/// `POST /api/embed` (`input`) and the older `/api/embeddings` (`prompt`).
#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    pub model: String,
    pub input: Option<Value>,
    pub prompt: Option<String>,
    pub truncate: Option<bool>,
    pub dimensions: Option<i64>,
    pub keep_alive: Option<KeepAliveValue>,
}

/// `POST /api/show`, `/api/pull` and the other model routes.
#[derive(Debug, Deserialize)]
pub struct ModelRequest {
    pub model: Option<String>,
    /// The older name of `model`.
    pub name: Option<String>,
}

/// RFC 3339 in UTC with microseconds, as Ollama's clients parse it.
fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, secs) = ((d.as_secs() / 86_400) as i64, d.as_secs() % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian, 400-year eras).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        d.subsec_micros()
    )
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn done_reason(f: Finish) -> &'static str {
    if f.truncated() {
        "length"
    } else {
        "stop"
    }
}

/// The closing fields: why it ended, the counts and Ollama's durations (nanoseconds).
fn metrics(into: &mut Map<String, Value>, finish: Finish, c: Counts) {
    let t = c.timings.unwrap_or_default();
    let prompt_eval = t.time_to_first_token.saturating_sub(t.queued);
    into.insert("done".into(), json!(true));
    into.insert("done_reason".into(), json!(done_reason(finish)));
    into.insert("total_duration".into(), json!(nanos(t.total)));
    into.insert("load_duration".into(), json!(0));
    into.insert("prompt_eval_count".into(), json!(c.prompt_tokens));
    into.insert("prompt_eval_duration".into(), json!(nanos(prompt_eval)));
    into.insert("eval_count".into(), json!(c.completion_tokens));
    into.insert("eval_duration".into(), json!(nanos(t.total.saturating_sub(t.time_to_first_token))));
}

/// Tool calls as Ollama gives them: arguments as an object.
fn calls_out(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let arguments: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
            json!({"id": c.id, "function": {"index": index, "name": c.name, "arguments": arguments}})
        })
        .collect()
}

/// A message's `images` (base64 strings), placed before its text in order.
fn images(images: Option<&Vec<Value>>, at: &str, message: usize) -> Result<Vec<Attached>, ApiError> {
    let mut out = Vec::new();
    for (k, image) in images.into_iter().flatten().enumerate() {
        let at = format!("{at}[{k}]");
        let data = image.as_str().ok_or_else(|| ApiError::invalid(&at, "an image is a base64 string"))?;
        out.push(Attached { bytes: media::base64(&at, data)?, param: at, message, offset: 0 });
    }
    Ok(out)
}

/// The plan from the shared fields; `shape` and input are the route's.
fn plan(common: &Common) -> Result<(Plan, Option<usize>), ApiError> {
    let o = common.options.as_ref();
    let get = |f: fn(&ModelOptions) -> Option<f64>| o.and_then(f);
    let options = Options {
        model: Some(common.model.clone()),
        // Ollama streams unless told not to.
        stream: Some(common.stream.unwrap_or(true)),
        stop: o.and_then(|o| o.stop.as_ref()).map(|s| Stop(s.0.clone())),
        temperature: get(|o| o.temperature),
        top_p: get(|o| o.top_p),
        min_p: get(|o| o.min_p),
        repeat_penalty: get(|o| o.repeat_penalty),
        presence_penalty: get(|o| o.presence_penalty),
        frequency_penalty: get(|o| o.frequency_penalty),
        top_k: o.and_then(|o| o.top_k),
        seed: o.and_then(|o| o.seed).filter(|&s| s >= 0),
        keep_alive: common.keep_alive.clone(),
        ..Options::default()
    };
    let format = match &common.format {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) if s == "json" => Some(ResponseFormat::JsonObject),
        Some(schema @ Value::Object(_)) => {
            Some(ResponseFormat::JsonSchema { json_schema: JsonSchemaFormat { schema: Some(schema.clone()) } })
        }
        Some(_) => return Err(ApiError::invalid("format", "expected \"json\" or a JSON Schema object")),
    };
    let max_tokens = o.and_then(|o| o.num_predict).filter(|&n| n > 0).map(|n| ("options.num_predict", n));
    let logprobs = plan::chat_logprobs(common.logprobs, common.top_logprobs)?;
    Ok((Plan::new(&options, max_tokens, logprobs, format.as_ref())?.cap_to_context(), logprobs))
}

/// The conversation as chat messages.
fn chat_messages(messages: &[InMessage]) -> Result<(Vec<ChatMessage>, Vec<Attached>), ApiError> {
    let mut out = Vec::with_capacity(messages.len());
    let mut attached = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.role.to_ascii_lowercase();
        if !matches!(role.as_str(), "system" | "user" | "assistant" | "tool") {
            return Err(ApiError::invalid(
                format!("messages[{i}].role"),
                format!("unknown role {:?} (expected system, user, assistant or tool)", m.role),
            ));
        }
        let media = images(m.images.as_ref(), &format!("messages[{i}].images"), out.len())?;
        if role != "user" && !media.is_empty() {
            return Err(ApiError::invalid(format!("messages[{i}].images"), "images are read in user messages only"));
        }
        attached.extend(media);
        let mut message = ChatMessage::new(role, m.content.clone().unwrap_or_default());
        for call in m.tool_calls.iter().flatten() {
            let arguments = match &call.function.arguments {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            message.tool_calls.push(ToolCall { id: String::new(), name: call.function.name.clone(), arguments });
        }
        message.tool_call_id = m.tool_name.clone();
        message.reasoning_content = m.thinking.clone();
        out.push(message);
    }
    Ok((out, attached))
}

/// Which route a generation came from: their replies differ in where the text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat,
    Generate,
}

/// `POST /api/chat`'s body, checked; `None` when there is nothing to generate (no messages:
/// the request only loads the model).
pub fn check(body: &[u8]) -> Result<Option<Checked>, ApiError> {
    let common: Common = body::parse(body)?;
    let req: ChatRequest = body::parse(body)?;
    if req.messages.is_empty() {
        return Ok(None);
    }
    let (plan, logprobs) = plan(&common)?;
    let (messages, media) = chat_messages(&req.messages)?;
    let defs = req.tools.as_deref().unwrap_or_default();
    let tools = tools::request(defs, None, true, messages.clone())?;
    let talk =
        Chat { messages, media, tools, logprobs: logprobs.is_some(), prompt_param: "messages", format_param: "format" };
    talk.checked(plan, None).map(Some)
}

/// `POST /api/generate`'s body, checked; `None` when there is no prompt (a load).
pub fn check_generate(body: &[u8]) -> Result<Option<Checked>, ApiError> {
    let common: Common = body::parse(body)?;
    let req: GenerateRequest = body::parse(body)?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "`suffix` (fill-in-the-middle) is not supported"));
    }
    if req.template.as_deref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid(
            "template",
            "a per-request `template` is not supported: the model's own is used",
        ));
    }
    if req.context.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(ApiError::invalid("context", "`context` is not supported: send the conversation to /api/chat"));
    }
    let prompt = match req.prompt.as_deref() {
        // A load; images with it would be dropped unread.
        None | Some("") if req.images.as_ref().is_some_and(|i| !i.is_empty()) => {
            return Err(ApiError::invalid("images", "images need a `prompt` to go with"))
        }
        None | Some("") => return Ok(None),
        Some(p) => p,
    };
    let (plan, logprobs) = plan(&common)?;
    let mut media = Vec::new();
    let input = if req.raw == Some(true) {
        if req.images.as_ref().is_some_and(|i| !i.is_empty()) {
            return Err(ApiError::invalid("images", "images need the model's chat template: not with `raw`"));
        }
        Prompt::Text(prompt.to_string())
    } else {
        let mut messages = Vec::new();
        if let Some(system) = req.system.as_deref().filter(|s| !s.is_empty()) {
            messages.push(ChatMessage::system(system));
        }
        media = images(req.images.as_ref(), "images", messages.len())?;
        messages.push(ChatMessage::user(prompt));
        Prompt::Chat(messages)
    };
    let shape = Shape {
        n: 1,
        logprobs: logprobs.is_some(),
        constrained: plan.constrained(),
        prompt_param: "prompt",
        tools: None,
    };
    Ok(Some(Checked { plan, shape, input: Input::Prompt(input), media, user: None }))
}

pub(crate) async fn chat(
    State(s): State<AppState>,
    Extension(record): Extension<Arc<RequestRecord>>,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
    match check(&body)? {
        Some(checked) => answer(&s, record, checked, Route::Chat).await,
        None => load_only(&s, &body::parse(&body)?, Route::Chat).await,
    }
}

pub(crate) async fn generate(
    State(s): State<AppState>,
    Extension(record): Extension<Arc<RequestRecord>>,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
    match check_generate(&body)? {
        Some(checked) => answer(&s, record, checked, Route::Generate).await,
        None => load_only(&s, &body::parse(&body)?, Route::Generate).await,
    }
}

/// A request with nothing to generate loads the model (or, with `keep_alive: 0`, unloads it).
async fn load_only(s: &AppState, common: &Common, route: Route) -> Result<Response, ApiError> {
    let keep_alive = plan::keep_alive(common.keep_alive.as_ref())?;
    let lease = s.registry.acquire(Some(&common.model), keep_alive).await?;
    let name = lease.name.clone();
    drop(lease);
    let reason = if keep_alive == Some(KeepAlive::For(Duration::ZERO)) { "unload" } else { "load" };
    let mut body =
        json!({"model": name, "created_at": timestamp(SystemTime::now()), "done": true, "done_reason": reason});
    match route {
        Route::Chat => body["message"] = json!({"role": "assistant", "content": ""}),
        Route::Generate => body["response"] = json!(""),
    }
    Ok(Json(body).into_response())
}

async fn answer(
    s: &AppState,
    record: Arc<RequestRecord>,
    checked: Checked,
    route: Route,
) -> Result<Response, ApiError> {
    let stream = checked.plan.stream;
    let g = routes::admit(s, record, checked).await?;
    if stream {
        let lines = Lines { route, model: g.model_name().to_string(), calls: Vec::new() };
        return Ok(framing::ndjson(frames(g, Vec::new(), lines)));
    }
    let done = g.collect().await?;
    let c = done.choices.into_iter().next().unwrap_or_default();
    let lines = Lines { route, model: done.model, calls: c.calls };
    let lp: Vec<_> = c.logprobs.into_iter().map(|(_, lp)| lp).collect();
    let mut body = lines.line(&c.content, c.reasoning.as_deref(), (!lp.is_empty()).then_some(lp));
    lines.add_calls(&mut body);
    metrics(&mut body, c.finish.unwrap_or(Finish::EndOfTurn), done.counts);
    Ok(Json(body).into_response())
}

/// The stream's lines: one per piece of text, the tool calls whole (Ollama sends them in one
/// piece), then the closing line with the counts.
struct Lines {
    route: Route,
    model: String,
    calls: Vec<ToolCall>,
}

impl Lines {
    fn line(
        &self,
        text: &str,
        thinking: Option<&str>,
        logprobs: Option<Vec<crate::server::openai::TokenLogprob>>,
    ) -> Map<String, Value> {
        let mut line = Map::new();
        line.insert("model".into(), json!(self.model));
        line.insert("created_at".into(), json!(timestamp(SystemTime::now())));
        match self.route {
            Route::Chat => {
                let mut message = json!({"role": "assistant", "content": text});
                if let Some(t) = thinking {
                    message["thinking"] = json!(t);
                }
                line.insert("message".into(), message);
            }
            Route::Generate => {
                line.insert("response".into(), json!(text));
                if let Some(t) = thinking {
                    line.insert("thinking".into(), json!(t));
                }
            }
        }
        line.insert("done".into(), json!(false));
        if let Some(lp) = logprobs {
            line.insert("logprobs".into(), json!(lp));
        }
        line
    }

    fn add_calls(&self, line: &mut Map<String, Value>) {
        if let (Route::Chat, false) = (self.route, self.calls.is_empty()) {
            if let Some(m) = line.get_mut("message") {
                m["tool_calls"] = calls_out(&self.calls);
            }
        }
    }
}

impl Encode for Lines {
    type Frame = Map<String, Value>;

    fn reply(&mut self, g: &Generation, reply: Reply, out: &mut Vec<Self::Frame>) {
        match reply {
            Reply::Piece { deltas, logprob, .. } => {
                let (mut text, mut thinking) = (String::new(), String::new());
                for d in deltas {
                    match d {
                        ChatDelta::Content(t) => text.push_str(&t),
                        ChatDelta::Reasoning(t) => thinking.push_str(&t),
                        ChatDelta::ToolCallStart { id, name, .. } => {
                            self.calls.push(ToolCall { id, name, arguments: String::new() })
                        }
                        ChatDelta::ToolCallArguments { index, fragment } => {
                            if let Some(c) = self.calls.get_mut(index) {
                                c.arguments.push_str(&fragment);
                            }
                        }
                    }
                }
                if !text.is_empty() || !thinking.is_empty() || logprob.is_some() {
                    let thinking = (!thinking.is_empty()).then_some(thinking.as_str());
                    out.push(self.line(&text, thinking, logprob.map(|lp| vec![lp])));
                }
            }
            Reply::Done { finish, .. } => {
                if !self.calls.is_empty() {
                    let mut line = self.line("", None, None);
                    self.add_calls(&mut line);
                    out.push(line);
                }
                let mut last = self.line("", None, None);
                metrics(&mut last, finish, g.counts());
                out.push(last);
            }
        }
    }

    fn end(&mut self, _: &Generation, _: &mut Vec<Self::Frame>) {}

    fn fail(&mut self, _: &Generation, error: ApiError, out: &mut Vec<Self::Frame>) {
        if let Value::Object(body) = error.ollama_body() {
            out.push(body);
        }
    }
}

pub(crate) async fn embed(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<EmbedRequest>,
) -> Result<Response, ApiError> {
    let texts = match &req.input {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(t)) if t.is_empty() => Vec::new(),
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::invalid(format!("input[{i}]"), "expected a string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::invalid("input", "expected a string or an array of strings")),
    };
    let (vectors, tokens, lease_name, took) = embed_texts(&s, &req, texts).await?;
    let vectors: Vec<Vec<f32>> = match req.dimensions {
        None => vectors,
        Some(d) if d >= 1 => vectors.into_iter().map(|v| shorten(v, d as usize)).collect(),
        Some(d) => return Err(ApiError::invalid("dimensions", format!("`dimensions` must be at least 1, got {d}"))),
    };
    Ok(Json(json!({
        "model": lease_name,
        "embeddings": vectors,
        "total_duration": nanos(took),
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }))
    .into_response())
}

/// The older embedding route: one `prompt`, one `embedding`.
pub(crate) async fn embeddings(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<EmbedRequest>,
) -> Result<Response, ApiError> {
    let texts = vec![req.prompt.clone().unwrap_or_default()];
    let (mut vectors, ..) = embed_texts(&s, &req, texts).await?;
    Ok(Json(json!({ "embedding": vectors.pop().unwrap_or_default() })).into_response())
}

async fn embed_texts(
    s: &AppState,
    req: &EmbedRequest,
    texts: Vec<String>,
) -> Result<(Vec<Vec<f32>>, usize, String, Duration), ApiError> {
    let started = std::time::Instant::now();
    let keep_alive = plan::keep_alive(req.keep_alive.as_ref())?;
    let lease = s.registry.acquire(Some(&req.model), keep_alive).await?;
    if texts.is_empty() {
        return Ok((Vec::new(), 0, lease.name.clone(), started.elapsed()));
    }
    let (vectors, tokens) = routes::embed(&lease, texts, req.truncate.unwrap_or(true)).await?;
    Ok((vectors, tokens, lease.name.clone(), started.elapsed()))
}

/// The first `d` dimensions, made unit length again.
fn shorten(mut v: Vec<f32>, d: usize) -> Vec<f32> {
    v.truncate(d);
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// `details` of a model: what the file says once it is loaded.
fn details(loaded: Option<&Loaded>) -> Value {
    let Some(l) = loaded else { return json!({"format": "gguf"}) };
    let arch = l.model.architecture();
    let n = l.model.n_params() as f64;
    let size = if n >= 1e9 { format!("{:.1}B", n / 1e9) } else { format!("{:.0}M", n / 1e6) };
    let quantization = l.model.description().rsplit(' ').next().unwrap_or_default().to_string();
    json!({
        "format": "gguf",
        "family": arch,
        "families": [arch],
        "parameter_size": size,
        "quantization_level": quantization,
        "parent_model": "",
    })
}

fn file_size(l: &Listed) -> u64 {
    std::fs::metadata(&l.path).map_or(0, |m| m.len())
}

fn modified(l: &Listed) -> String {
    timestamp(UNIX_EPOCH + Duration::from_secs(l.modified))
}

pub(crate) async fn tags(State(s): State<AppState>) -> Json<Value> {
    let models: Vec<Value> = s
        .registry
        .listing()
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "model": l.name,
                "modified_at": modified(l),
                "size": file_size(l),
                "details": details(l.loaded.as_deref()),
            })
        })
        .collect();
    Json(json!({ "models": models }))
}

pub(crate) async fn ps(State(s): State<AppState>) -> Json<Value> {
    let models: Vec<Value> = s
        .registry
        .listing()
        .iter()
        .filter_map(|l| {
            let loaded = l.loaded.as_deref()?;
            // Busy or kept forever: Ollama reports a time far ahead.
            let expires = l
                .expires_at
                .map_or(UNIX_EPOCH + Duration::from_secs(253_402_214_400), |t| UNIX_EPOCH + Duration::from_secs(t));
            Some(json!({
                "name": l.name,
                "model": l.name,
                "size": loaded.model.size(),
                "size_vram": 0,
                "expires_at": timestamp(expires),
                "context_length": loaded.n_ctx(),
                "details": details(Some(loaded)),
            }))
        })
        .collect();
    Json(json!({ "models": models }))
}

/// GGUF metadata as Ollama's `model_info`: numbers as numbers; the tokenizer's vocabulary
/// arrays are left out (megabytes).
fn model_info(model: &Model) -> Value {
    let mut info = Map::new();
    for (key, value) in model.metadata() {
        if key.starts_with("tokenizer.ggml.") && key != "tokenizer.ggml.model" {
            continue;
        }
        let v = value.parse::<i64>().map(Value::from).or_else(|_| value.parse::<f64>().map(Value::from));
        info.insert(key, v.unwrap_or(Value::String(value)));
    }
    info.insert("general.parameter_count".into(), json!(model.n_params()));
    Value::Object(info)
}

fn model_name(req: &ModelRequest) -> Result<&str, ApiError> {
    req.model.as_deref().or(req.name.as_deref()).ok_or_else(|| ApiError::invalid("model", "`model` is required"))
}

pub(crate) async fn show(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<ModelRequest>,
) -> Result<Response, ApiError> {
    let lease = s.registry.acquire(Some(model_name(&req)?), None).await?;
    let listed = s.registry.listing().into_iter().find(|l| l.name == lease.name);
    let template = lease.model.chat_template().unwrap_or_default();
    // The listing's (completion, vision, audio), and tools when the template takes them.
    let mut capabilities = listed.as_ref().map_or_else(|| vec!["completion"], |l| l.capabilities.clone());
    if template.contains("tools") {
        capabilities.push("tools");
    }
    Ok(Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": template,
        "details": details(Some(&lease)),
        "model_info": model_info(&lease.model),
        "capabilities": capabilities,
        "modified_at": listed.as_ref().map(modified),
    }))
    .into_response())
}

/// `/api/pull`: models are the ones the server was started with. One of those "pulls" at
/// once; any other name is refused, saying how models are added.
pub(crate) async fn pull(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<ModelRequest>,
) -> Result<Response, ApiError> {
    let name = model_name(&req)?;
    if s.registry.names().iter().any(|n| n == name) {
        return Ok(Json(json!({"status": "success"})).into_response());
    }
    Err(ApiError::bad_request(format!(
        "this server does not download models: they are configured when it starts (--model NAME=PATH); served: {}",
        s.registry.names().join(", ")
    ))
    .param("model"))
}

/// `/api/push`, `/api/create`, `/api/copy`, `/api/delete`: not for a server whose models are
/// configured at start.
pub(crate) async fn manage() -> ApiError {
    ApiError::not_implemented(
        "models are configured when this server starts (--model NAME=PATH): they cannot be created, copied, pushed \
         or deleted through the API",
    )
}

pub(crate) async fn version() -> Json<Value> {
    Json(json!({ "version": API_VERSION }))
}
