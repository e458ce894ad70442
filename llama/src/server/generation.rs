//! One generation request from admission to the last byte: submitted to the model's engine,
//! answered as one JSON body or as an SSE stream of OpenAI chunks.
//!
//! The HTTP status is decided only once the engine has admitted the request (its `Started`
//! event), so a full queue or a prompt over the context is a real 503/400, never a stream
//! that breaks. What fails after that travels inside the stream as an error event.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::engine::{Completion, Event, FailureKind, Request, SubmitError};
use crate::tools::{RenderedChat, ToolCallStream};
use crate::{ControlText, FinishReason, Model, Piece, Token};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::server::access_log::RequestRecord;
use crate::server::error::ApiError;
use crate::server::metrics::HttpMetrics;
use crate::server::openai::{
    AssistantMessage, ChatChoice, ChatChunk, ChatCompletion, ChatLogprobs, ChunkChoice, Delta, TextChoice,
    TextCompletion, TextLogprobs, TokenLogprob, Usage,
};
use crate::server::registry::Lease;

/// How often an idle stream sends an SSE comment: keeps proxies from timing out while a long
/// prompt is read, and lets a vanished client be noticed (the write fails).
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Text,
}

/// What the request asked for beyond the engine request itself.
#[derive(Debug, Clone)]
pub struct Shape {
    pub api: Api,
    pub n: usize,
    pub logprobs: bool,
    pub include_usage: bool,
    /// A grammar or schema constrains the output: a sampling dead end is then the request's
    /// own doing (400), not the server's.
    pub constrained: bool,
    /// The field that held the prompt, for error messages.
    pub prompt_param: &'static str,
    /// A chat with tools: the rendered request, whose parser turns each reply into content,
    /// reasoning and tool calls.
    pub tools: Option<Arc<RenderedChat>>,
}

/// An admitted request.
pub struct Generation {
    shape: Shape,
    id: String,
    created: u64,
    model_name: String,
    model: Model,
    completion: Completion,
    /// Released as soon as the last choice is done, before the final bytes go out, so a
    /// client that asks right after the reply sees the keep-alive already applied.
    lease: Option<Lease>,
    record: Arc<RequestRecord>,
    http: Arc<HttpMetrics>,
    prompt_tokens: usize,
    cached_tokens: usize,
    completion_tokens: usize,
    done: usize,
    finished: bool,
}

impl Drop for Generation {
    fn drop(&mut self) {
        // Dropped before the end: the client went away (axum drops the handler or the stream).
        // Dropping `completion` right after cancels it in the engine.
        if !self.finished {
            self.http.disconnected();
        }
    }
}

/// Counts a client disconnect if dropped armed (the future holding it was dropped).
struct Abandoned<'a>(Option<&'a HttpMetrics>);

impl Abandoned<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some(http) = self.0 {
            http.disconnected();
        }
    }
}

pub fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:016x}{:08x}", RandomState::new().hash_one(n), n as u32)
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `finish_reason` of a chat choice: a reply that ended by itself with tool calls says so.
fn chat_finish(f: FinishReason, has_calls: bool) -> Result<&'static str, ApiError> {
    let reason = finish_reason(f)?;
    Ok(if has_calls && reason == "stop" { "tool_calls" } else { reason })
}

fn finish_reason(f: FinishReason) -> Result<&'static str, ApiError> {
    match f {
        FinishReason::Stop | FinishReason::Eog => Ok("stop"),
        FinishReason::Length | FinishReason::ContextFull | FinishReason::Deadline => Ok("length"),
        FinishReason::Shutdown => {
            Err(ApiError::unavailable("the generation was cancelled: the server is shutting down"))
        }
        FinishReason::Stalled => Err(ApiError::unavailable(
            "the generation was cancelled: the client read nothing for longer than the stall timeout",
        )),
        FinishReason::Cancelled => Err(ApiError::unavailable("the generation was cancelled")),
    }
}

/// A failed choice as the client sees it: a sampler with nothing to pick under the request's
/// own constraints is the request's fault (400), anything else the server's (500).
fn error(shape: &Shape, kind: FailureKind, message: String) -> ApiError {
    match kind {
        FailureKind::Sampling if shape.constrained => {
            ApiError::bad_request(format!("the output constraint has no valid continuation: {message}"))
        }
        FailureKind::Sampling => ApiError::bad_request(format!("no token could be sampled: {message}")),
        _ => ApiError::internal(format!("generation failed: {message}")),
    }
}

/// Log-probability entries of one piece (none for the final flush, which has no token).
fn token_logprob(model: &Model, token: Token, logprob: f32) -> TokenLogprob {
    let bytes = model.vocab().token_to_bytes(token, ControlText::Show).unwrap_or_default();
    TokenLogprob { token: String::from_utf8_lossy(&bytes).into_owned(), logprob, bytes, top_logprobs: None }
}

fn chat_logprobs(model: &Model, piece: &Piece) -> Option<TokenLogprob> {
    let (token, logprob) = (piece.token?, piece.logprob?);
    let mut entry = token_logprob(model, token, logprob);
    entry.top_logprobs = Some(piece.top_logprobs.iter().map(|&(t, lp)| token_logprob(model, t, lp)).collect());
    Some(entry)
}

/// Appends `piece` to legacy-format log-probabilities, `offset` being where its text starts.
fn text_logprobs(model: &Model, piece: &Piece, offset: usize, into: &mut TextLogprobs) {
    let Some(entry) = chat_logprobs(model, piece) else { return };
    into.tokens.push(entry.token);
    into.token_logprobs.push(entry.logprob);
    into.top_logprobs.push(entry.top_logprobs.into_iter().flatten().map(|t| (t.token, t.logprob)).collect());
    into.text_offset.push(offset);
}

impl Generation {
    /// Submits `request` and waits until the engine admits it.
    pub async fn start(
        lease: Lease,
        request: Request,
        shape: Shape,
        record: Arc<RequestRecord>,
        http: Arc<HttpMetrics>,
    ) -> Result<Generation, ApiError> {
        let engine = lease.engine();
        // Tokenizing and rendering the chat template take a while on long prompts.
        let submitted = tokio::task::spawn_blocking(move || engine.submit(request))
            .await
            .map_err(|e| ApiError::internal(format!("the request could not be submitted: {e}")))?;
        let mut completion = submitted.map_err(|e: SubmitError| ApiError::from_submit(e, shape.prompt_param))?;
        // A client that leaves while its request waits for a slot cancels it too: count that.
        let waiting = Abandoned(Some(&http));
        let first = completion.next().await;
        waiting.disarm();
        let (prompt_tokens, cached_tokens) = match first {
            Some(Event::Started { prompt_tokens, cached_tokens }) => (prompt_tokens, cached_tokens),
            Some(Event::Error { kind, message, .. }) => return Err(error(&shape, kind, message)),
            _ => return Err(ApiError::unavailable("the model stopped before the request started")),
        };
        record.prompt_tokens.store(prompt_tokens, Ordering::Relaxed);
        let prefix = if shape.api == Api::Chat { "chatcmpl" } else { "cmpl" };
        Ok(Generation {
            id: new_id(prefix),
            created: unix_now(),
            model_name: lease.name.clone(),
            model: lease.model.clone(),
            shape,
            completion,
            lease: Some(lease),
            record,
            http,
            prompt_tokens,
            cached_tokens,
            completion_tokens: 0,
            done: 0,
            finished: false,
        })
    }

    fn usage(&self) -> Usage {
        Usage::new(self.prompt_tokens, self.cached_tokens, self.completion_tokens)
    }

    /// Bookkeeping of a `Done`; true once every choice is done.
    fn count_done(&mut self, tokens: usize) -> bool {
        self.completion_tokens += tokens;
        self.record.completion_tokens.store(self.completion_tokens, Ordering::Relaxed);
        self.done += 1;
        if self.done >= self.shape.n {
            self.finished = true;
            self.lease = None;
            return true;
        }
        false
    }

    /// Runs to the end and answers with one JSON body.
    pub async fn respond(mut self) -> Result<Response, ApiError> {
        let n = self.shape.n;
        let mut texts = vec![String::new(); n];
        let mut finish: Vec<Option<FinishReason>> = vec![None; n];
        let mut chat_lp: Vec<ChatLogprobs> = (0..n).map(|_| ChatLogprobs::default()).collect();
        let mut text_lp: Vec<TextLogprobs> = (0..n).map(|_| TextLogprobs::default()).collect();
        loop {
            let event = self.completion.next().await;
            match event {
                Some(Event::Piece { index, piece }) if index < n => {
                    if self.shape.logprobs {
                        match self.shape.api {
                            Api::Chat => chat_lp[index].content.extend(chat_logprobs(&self.model, &piece)),
                            Api::Text => text_logprobs(&self.model, &piece, texts[index].len(), &mut text_lp[index]),
                        }
                    }
                    texts[index].push_str(&piece.text);
                }
                Some(Event::Done { index, finish: f, usage, .. }) if index < n => {
                    finish_reason(f).inspect_err(|_| self.finished = true)?;
                    finish[index] = Some(f);
                    if self.count_done(usage.completion_tokens) {
                        break;
                    }
                }
                Some(Event::Error { kind, message, .. }) => {
                    self.finished = true;
                    return Err(error(&self.shape, kind, message));
                }
                Some(_) => {}
                None => {
                    self.finished = true;
                    return Err(ApiError::unavailable("the model stopped during the request"));
                }
            }
        }
        let body = match self.shape.api {
            Api::Chat => Json(ChatCompletion {
                id: self.id.clone(),
                object: "chat.completion",
                created: self.created,
                model: self.model_name.clone(),
                choices: texts
                    .into_iter()
                    .zip(finish)
                    .zip(chat_lp)
                    .enumerate()
                    .map(|(index, ((content, f), lp))| {
                        let message = self.chat_message(content);
                        let has_calls = message.tool_calls.is_some();
                        Ok(ChatChoice {
                            index,
                            message,
                            logprobs: self.shape.logprobs.then_some(lp),
                            finish_reason: f.map(|f| chat_finish(f, has_calls)).transpose()?,
                        })
                    })
                    .collect::<Result<_, ApiError>>()?,
                usage: self.usage(),
                system_fingerprint: None,
            })
            .into_response(),
            Api::Text => Json(TextCompletion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model_name.clone(),
                choices: texts
                    .into_iter()
                    .zip(finish)
                    .zip(text_lp)
                    .enumerate()
                    .map(|(index, ((text, f), lp))| {
                        Ok(TextChoice {
                            index,
                            text,
                            logprobs: self.shape.logprobs.then_some(lp),
                            finish_reason: f.map(finish_reason).transpose()?,
                        })
                    })
                    .collect::<Result<_, ApiError>>()?,
                usage: Some(Some(self.usage())),
                system_fingerprint: None,
            })
            .into_response(),
        };
        Ok(body)
    }

    /// The reply message of one choice: with tools, the output parsed into content, reasoning
    /// and tool calls (output that does not follow the format stays content).
    fn chat_message(&self, text: String) -> AssistantMessage {
        let parsed = self.shape.tools.as_ref().and_then(|r| r.parser().ok()).map(|p| p.parse(&text));
        match parsed {
            None => AssistantMessage {
                role: "assistant",
                content: Some(text),
                refusal: None,
                reasoning_content: None,
                tool_calls: None,
            },
            Some(parsed) => {
                let m = parsed.message;
                let tool_calls = crate::server::tools::calls_out(&m);
                AssistantMessage {
                    role: "assistant",
                    content: (!m.content.is_empty() || tool_calls.is_none()).then_some(m.content),
                    refusal: None,
                    reasoning_content: m.reasoning_content,
                    tool_calls,
                }
            }
        }
    }

    /// Answers as a stream of SSE chunks ending in `data: [DONE]`.
    pub fn stream(self) -> Response {
        let mut out = VecDeque::new();
        if self.shape.api == Api::Chat {
            // The role comes first, in a chunk of its own per choice.
            for index in 0..self.shape.n {
                let delta = Delta { role: Some("assistant"), content: Some(String::new()), ..Delta::default() };
                out.push_back(self.chat_chunk(index, delta, None, None));
            }
        }
        let parsers = (0..self.shape.n)
            .map(|_| self.shape.tools.as_ref().and_then(|r| r.parser().ok()).map(ToolCallStream::new))
            .collect();
        let state = StreamState { generation: self, out, offsets: Vec::new(), parsers, ended: false };
        let events = futures::stream::unfold(state, |mut s| async move {
            let event = s.next().await?;
            Some((Ok::<_, Infallible>(event), s))
        });
        sse(events)
    }

    fn chat_chunk(
        &self,
        index: usize,
        delta: Delta,
        logprobs: Option<ChatLogprobs>,
        finish_reason: Option<&'static str>,
    ) -> SseEvent {
        json_event(&ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model_name.clone(),
            choices: vec![ChunkChoice { index, delta, logprobs, finish_reason }],
            system_fingerprint: None,
            usage: self.shape.include_usage.then_some(None),
        })
    }

    fn text_chunk(
        &self,
        index: usize,
        text: String,
        logprobs: Option<TextLogprobs>,
        finish_reason: Option<&'static str>,
    ) -> SseEvent {
        json_event(&TextCompletion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model_name.clone(),
            choices: vec![TextChoice { index, text, logprobs, finish_reason }],
            usage: self.shape.include_usage.then_some(None),
            system_fingerprint: None,
        })
    }

    /// The chunk with `choices: []` and the usage, sent last when `include_usage` is set.
    fn usage_chunk(&self) -> SseEvent {
        match self.shape.api {
            Api::Chat => json_event(&ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk",
                created: self.created,
                model: self.model_name.clone(),
                choices: Vec::new(),
                system_fingerprint: None,
                usage: Some(Some(self.usage())),
            }),
            Api::Text => json_event(&TextCompletion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model_name.clone(),
                choices: Vec::new(),
                usage: Some(Some(self.usage())),
                system_fingerprint: None,
            }),
        }
    }
}

fn json_event<T: Serialize>(value: &T) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(value).unwrap_or_default())
}

pub fn sse<S>(events: S) -> Response
where
    S: Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
{
    Sse::new(events).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE)).into_response()
}

struct StreamState {
    generation: Generation,
    /// SSE events ready to go.
    out: VecDeque<SseEvent>,
    /// Per choice, bytes of text sent so far (the legacy API's `text_offset`).
    offsets: Vec<usize>,
    /// Per choice, with tools: the incremental parser that turns text into deltas.
    parsers: Vec<Option<ToolCallStream>>,
    ended: bool,
}

impl StreamState {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.out.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            let event = self.generation.completion.next().await;
            self.on(event);
        }
    }

    fn fail(&mut self, error: ApiError) {
        self.generation.finished = true;
        self.generation.lease = None;
        self.out.push_back(SseEvent::default().data(error.body().to_string()));
        self.ended = true;
    }

    fn on(&mut self, event: Option<Event>) {
        let g = &mut self.generation;
        let n = g.shape.n;
        match event {
            Some(Event::Piece { index, piece }) if index < n => {
                if piece.token.is_some() {
                    // Counted as they come, so a stream cut short still logs what it cost.
                    g.record.completion_tokens.fetch_add(1, Ordering::Relaxed);
                }
                if piece.text.is_empty() && !(g.shape.logprobs && piece.token.is_some()) {
                    return;
                }
                let chunk = match g.shape.api {
                    Api::Chat => {
                        let lp = g.shape.logprobs.then(|| ChatLogprobs {
                            content: chat_logprobs(&g.model, &piece).into_iter().collect(),
                            refusal: None,
                        });
                        if let Some(Some(parser)) = self.parsers.get_mut(index) {
                            // With tools the text goes through the parser: what it can say
                            // for sure becomes deltas (possibly none yet).
                            let deltas: Vec<Delta> =
                                parser.push(&piece.text).into_iter().map(crate::server::tools::delta).collect();
                            let mut lp = lp;
                            if deltas.is_empty() && lp.is_some() {
                                self.out.push_back(g.chat_chunk(index, Delta::default(), lp.take(), None));
                            }
                            for d in deltas {
                                self.out.push_back(g.chat_chunk(index, d, lp.take(), None));
                            }
                            return;
                        }
                        g.chat_chunk(index, Delta { content: Some(piece.text), ..Delta::default() }, lp, None)
                    }
                    Api::Text => {
                        if self.offsets.len() < n {
                            self.offsets.resize(n, 0);
                        }
                        let lp = g.shape.logprobs.then(|| {
                            let mut lp = TextLogprobs::default();
                            text_logprobs(&g.model, &piece, self.offsets[index], &mut lp);
                            lp
                        });
                        self.offsets[index] += piece.text.len();
                        g.text_chunk(index, piece.text, lp, None)
                    }
                };
                self.out.push_back(chunk);
            }
            Some(Event::Done { index, finish, usage, .. }) if index < n => {
                // With tools: what the parser held back, and whether the reply called tools.
                let mut has_calls = false;
                if let Some(parser) = self.parsers.get_mut(index).and_then(Option::take) {
                    let (parsed, rest) = parser.finish();
                    has_calls = !parsed.message.tool_calls.is_empty();
                    for d in rest {
                        self.out.push_back(g.chat_chunk(index, crate::server::tools::delta(d), None, None));
                    }
                }
                let reason = match chat_finish(finish, has_calls) {
                    Ok(r) => r,
                    Err(e) => return self.fail(e),
                };
                let chunk = match g.shape.api {
                    Api::Chat => g.chat_chunk(index, Delta::default(), None, Some(reason)),
                    Api::Text => g.text_chunk(index, String::new(), None, Some(reason)),
                };
                self.out.push_back(chunk);
                if g.count_done(usage.completion_tokens) {
                    if g.shape.include_usage {
                        let usage = g.usage_chunk();
                        self.out.push_back(usage);
                    }
                    self.out.push_back(SseEvent::default().data("[DONE]"));
                    self.ended = true;
                }
            }
            Some(Event::Error { kind, message, .. }) => {
                let error = error(&g.shape, kind, message);
                self.fail(error);
            }
            Some(_) => {}
            None => self.fail(ApiError::unavailable("the model stopped during the request")),
        }
    }
}
