//! One generation request from admission to its last event, in no protocol's terms: submitted
//! to the model's engine, its events turned into [`Reply`]s (each choice's text, reasoning and
//! tool-call deltas, then its [`Finish`]), which every protocol encodes: as one body through
//! [`Generation::collect`], or as a stream through [`frames`] and an [`Encode`].
//!
//! The HTTP status is decided only once the engine has admitted the request (its `Started`
//! event), so a full queue or a prompt over the context is a real 503/400, never a stream
//! that breaks. What fails after that reaches the encoder, which says it in its protocol.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::engine::{Completion, Event, FailureKind, Request, RequestTimings, SubmitError};
use crate::tools::{ChatDelta, RenderedChat, ToolCallStream};
use crate::{ControlText, FinishReason, Model, Piece, Token, ToolCall};
use futures::{Stream, StreamExt};

use crate::server::access_log::RequestRecord;
use crate::server::error::ApiError;
use crate::server::metrics::HttpMetrics;
use crate::server::openai::TokenLogprob;
use crate::server::registry::Lease;

/// What the request asked for beyond the engine request itself.
#[derive(Debug, Clone)]
pub struct Shape {
    pub n: usize,
    pub logprobs: bool,
    /// A grammar, schema or tool format constrains the output: a sampling dead end is then
    /// the request's own doing (400), not the server's.
    pub constrained: bool,
    /// The field that held the prompt, for error messages.
    pub prompt_param: &'static str,
    /// A chat with tools: the rendered request, whose parser turns each reply into content,
    /// reasoning and tool calls.
    pub tools: Option<Arc<RenderedChat>>,
}

/// A step of the reply, in the order generated.
#[derive(Debug)]
pub enum Reply {
    /// Choice `index` produced a token: what it adds (none while a tool call's parser waits
    /// to be sure) and, when asked for, the token's log-probabilities.
    Piece { index: usize, deltas: Vec<ChatDelta>, logprob: Option<TokenLogprob> },
    /// Choice `index` ended; `stop` is the stop sequence that ended it.
    Done { index: usize, finish: Finish, stop: Option<String> },
}

/// Why a choice ended, in terms every protocol can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn.
    EndOfTurn,
    /// A stop sequence appeared (it is not in the text).
    StopSequence,
    /// The token limit (or the request's deadline).
    Length,
    /// The context is full.
    ContextFull,
    /// The model ended its turn with tool calls.
    ToolCalls,
}

impl Finish {
    fn of(f: FinishReason, calls: bool) -> Result<Finish, ApiError> {
        Ok(match f {
            FinishReason::Stop | FinishReason::Eog if calls => Finish::ToolCalls,
            FinishReason::Eog => Finish::EndOfTurn,
            FinishReason::Stop => Finish::StopSequence,
            FinishReason::Length | FinishReason::Deadline => Finish::Length,
            FinishReason::ContextFull => Finish::ContextFull,
            FinishReason::Shutdown => {
                return Err(ApiError::unavailable("the generation was cancelled: the server is shutting down"))
            }
            FinishReason::Stalled => {
                return Err(ApiError::unavailable(
                    "the generation was cancelled: the client read nothing for longer than the stall timeout",
                ))
            }
            _ => return Err(ApiError::unavailable("the generation was cancelled")),
        })
    }

    /// Cut short by a limit rather than ended by the model.
    pub fn truncated(self) -> bool {
        matches!(self, Finish::Length | Finish::ContextFull)
    }
}

/// Token counts and times of the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// Of the last choice to end.
    pub timings: Option<RequestTimings>,
}

/// One choice, whole ([`Generation::collect`]).
#[derive(Debug, Default)]
pub struct Choice {
    pub content: String,
    pub reasoning: Option<String>,
    pub calls: Vec<ToolCall>,
    pub finish: Option<Finish>,
    /// The stop sequence that ended it.
    pub stop: Option<String>,
    /// Each token's log-probabilities with the byte offset in `content` where its text starts.
    pub logprobs: Vec<(usize, TokenLogprob)>,
}

/// A finished request: its choices and counts.
#[derive(Debug)]
pub struct Collected {
    pub choices: Vec<Choice>,
    pub counts: Counts,
    pub model: String,
}

/// An admitted request.
pub struct Generation {
    shape: Shape,
    model_name: String,
    model: Model,
    completion: Completion,
    /// Released as soon as the last choice is done, before the final bytes go out, so a
    /// client that asks right after the reply sees the keep-alive already applied.
    lease: Option<Lease>,
    record: Arc<RequestRecord>,
    http: Arc<HttpMetrics>,
    counts: Counts,
    /// Per choice, with tools: the incremental parser that turns text into deltas.
    parsers: Vec<Option<ToolCallStream>>,
    pending: VecDeque<Reply>,
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
    format!("{prefix}{:016x}{:08x}", RandomState::new().hash_one(n), n as u32)
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
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

fn token_logprob(model: &Model, token: Token, logprob: f32) -> TokenLogprob {
    let bytes = model.vocab().token_to_bytes(token, ControlText::Show).unwrap_or_default();
    TokenLogprob { token: String::from_utf8_lossy(&bytes).into_owned(), logprob, bytes, top_logprobs: None }
}

/// A piece's log-probabilities (none for the final flush, which has no token).
fn logprob(model: &Model, piece: &Piece) -> Option<TokenLogprob> {
    let (token, logprob) = (piece.token?, piece.logprob?);
    let mut entry = token_logprob(model, token, logprob);
    entry.top_logprobs = Some(piece.top_logprobs.iter().map(|&(t, lp)| token_logprob(model, t, lp)).collect());
    Some(entry)
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
        let parsers =
            (0..shape.n).map(|_| shape.tools.as_ref().and_then(|r| r.parser().ok()).map(ToolCallStream::new)).collect();
        Ok(Generation {
            model_name: lease.name.clone(),
            model: lease.model.clone(),
            shape,
            completion,
            lease: Some(lease),
            record,
            http,
            counts: Counts { prompt_tokens, cached_tokens, ..Counts::default() },
            parsers,
            pending: VecDeque::new(),
            done: 0,
            finished: false,
        })
    }

    /// The served model's name.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// Choices asked for.
    pub fn n(&self) -> usize {
        self.shape.n
    }

    /// Counts so far (complete once every choice is done).
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The next step of the reply; `None` once every choice is done. An error ends it.
    pub async fn next(&mut self) -> Result<Option<Reply>, ApiError> {
        loop {
            if let Some(reply) = self.pending.pop_front() {
                return Ok(Some(reply));
            }
            if self.finished {
                return Ok(None);
            }
            let event = self.completion.next().await;
            if let Err(e) = self.on(event) {
                self.end();
                return Err(e);
            }
        }
    }

    fn end(&mut self) {
        self.finished = true;
        self.lease = None;
    }

    fn on(&mut self, event: Option<Event>) -> Result<(), ApiError> {
        let n = self.shape.n;
        match event {
            Some(Event::Piece { index, piece }) if index < n => {
                if piece.token.is_some() {
                    // Counted as they come, so a stream cut short still logs what it cost.
                    self.record.completion_tokens.fetch_add(1, Ordering::Relaxed);
                }
                let logprob = if self.shape.logprobs { logprob(&self.model, &piece) } else { None };
                let deltas = match self.parsers.get_mut(index) {
                    // With tools the text goes through the parser: what it can say for sure
                    // becomes deltas (possibly none yet).
                    Some(Some(parser)) => parser.push(&piece.text),
                    _ if piece.text.is_empty() => Vec::new(),
                    _ => vec![ChatDelta::Content(piece.text)],
                };
                if !deltas.is_empty() || logprob.is_some() {
                    self.pending.push_back(Reply::Piece { index, deltas, logprob });
                }
            }
            Some(Event::Done { index, finish, stop, usage, timings }) if index < n => {
                // With tools: what the parser held back, and whether the reply called tools.
                let mut calls = false;
                if let Some(parser) = self.parsers.get_mut(index).and_then(Option::take) {
                    let (parsed, rest) = parser.finish();
                    calls = !parsed.message.tool_calls.is_empty();
                    if !rest.is_empty() {
                        self.pending.push_back(Reply::Piece { index, deltas: rest, logprob: None });
                    }
                }
                let finish = Finish::of(finish, calls)?;
                self.pending.push_back(Reply::Done { index, finish, stop });
                self.counts.completion_tokens += usage.completion_tokens;
                self.counts.timings = Some(timings);
                self.record.completion_tokens.store(self.counts.completion_tokens, Ordering::Relaxed);
                self.done += 1;
                if self.done >= n {
                    self.end();
                }
            }
            Some(Event::Error { kind, message, .. }) => return Err(error(&self.shape, kind, message)),
            Some(_) => {}
            None => return Err(ApiError::unavailable("the model stopped during the request")),
        }
        Ok(())
    }

    /// Runs to the end: every choice whole.
    pub async fn collect(mut self) -> Result<Collected, ApiError> {
        let mut choices: Vec<Choice> = (0..self.shape.n).map(|_| Choice::default()).collect();
        while let Some(reply) = self.next().await? {
            match reply {
                Reply::Piece { index, deltas, logprob } => {
                    let c = &mut choices[index];
                    if let Some(lp) = logprob {
                        c.logprobs.push((c.content.len(), lp));
                    }
                    for d in deltas {
                        match d {
                            ChatDelta::Content(t) => c.content.push_str(&t),
                            ChatDelta::Reasoning(t) => c.reasoning.get_or_insert_with(String::new).push_str(&t),
                            ChatDelta::ToolCallStart { id, name, .. } => {
                                c.calls.push(ToolCall { id, name, arguments: String::new() })
                            }
                            ChatDelta::ToolCallArguments { index, fragment } => {
                                if let Some(call) = c.calls.get_mut(index) {
                                    call.arguments.push_str(&fragment);
                                }
                            }
                        }
                    }
                }
                Reply::Done { index, finish, stop } => {
                    choices[index].finish = Some(finish);
                    choices[index].stop = stop;
                }
            }
        }
        Ok(Collected { choices, counts: self.counts, model: self.model_name.clone() })
    }
}

/// A protocol's stream encoding: frames for each reply step, for the end, for a failure.
pub trait Encode: Send + 'static {
    type Frame: Send + 'static;

    /// Frames for one step.
    fn reply(&mut self, g: &Generation, reply: Reply, out: &mut Vec<Self::Frame>);

    /// Frames after every choice is done.
    fn end(&mut self, g: &Generation, out: &mut Vec<Self::Frame>);

    /// Frames saying the request failed after its stream began (the last ones sent).
    fn fail(&mut self, g: &Generation, error: ApiError, out: &mut Vec<Self::Frame>);
}

/// `g` run to its end through `encoder`: `first`, then the frames of every step.
pub fn frames<E: Encode>(g: Generation, first: Vec<E::Frame>, encoder: E) -> impl Stream<Item = E::Frame> + Send {
    struct State<E: Encode> {
        g: Generation,
        encoder: E,
        out: VecDeque<E::Frame>,
        over: bool,
    }
    let state = State { g, encoder, out: first.into(), over: false };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(frame) = s.out.pop_front() {
                return Some((frame, s));
            }
            if s.over {
                return None;
            }
            let mut out = Vec::new();
            match s.g.next().await {
                Ok(Some(reply)) => s.encoder.reply(&s.g, reply, &mut out),
                Ok(None) => {
                    s.encoder.end(&s.g, &mut out);
                    s.over = true;
                }
                Err(e) => {
                    s.encoder.fail(&s.g, e, &mut out);
                    s.over = true;
                }
            }
            s.out.extend(out);
        }
    })
}
