//! What a caller sends the engine ([`Request`]) and what comes back ([`Completion`], a stream of
//! [`Event`]s).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::generate::{FinishReason, GenerateParams, Piece};
use crate::{ChatMessage, Sampler, Token};

/// A request's prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Plain text, tokenized without parsing special-token syntax (so user text cannot inject
    /// control tokens).
    Text(String),
    /// Tokens, used as they are.
    Tokens(Vec<Token>),
    /// Chat messages, rendered with the model's chat template (the assistant prefix appended).
    Chat(Vec<ChatMessage>),
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Self {
        Prompt::Text(s.to_string())
    }
}

impl From<String> for Prompt {
    fn from(s: String) -> Self {
        Prompt::Text(s)
    }
}

impl From<Vec<Token>> for Prompt {
    fn from(t: Vec<Token>) -> Self {
        Prompt::Tokens(t)
    }
}

impl From<Vec<ChatMessage>> for Prompt {
    fn from(m: Vec<ChatMessage>) -> Self {
        Prompt::Chat(m)
    }
}

/// One generation request for an [`Engine`](super::Engine).
///
/// ```
/// use llama::engine::Request;
/// use llama::{GenerateParams, Sampler};
/// let req = Request::new("Once upon a time")
///     .sampler(Sampler::chain().top_k(40).temp(0.8).dist(7))
///     .params(GenerateParams::default().max_tokens(64).stop(["\n\n"]));
/// ```
#[derive(Debug)]
#[must_use = "a request does nothing until submitted"]
pub struct Request {
    pub(crate) prompt: Prompt,
    pub(crate) samplers: Vec<Sampler>,
    pub(crate) n: usize,
    pub(crate) params: GenerateParams,
    pub(crate) deadline: Option<Instant>,
    /// Images and audio, in the order their markers stand in the prompt.
    #[cfg(feature = "mtmd")]
    pub(crate) media: Vec<crate::media::Media>,
}

impl Request {
    /// A request with a greedy sampler and [`GenerateParams::default`].
    pub fn new(prompt: impl Into<Prompt>) -> Request {
        Request {
            prompt: prompt.into(),
            samplers: vec![Sampler::greedy()],
            n: 1,
            params: GenerateParams::default(),
            deadline: None,
            #[cfg(feature = "mtmd")]
            media: Vec::new(),
        }
    }

    /// Images and audio for a text or chat prompt in which each
    /// [`media_marker`](super::EngineHandle::media_marker) stands for the next of them (in chat
    /// messages, inside their contents). The engine needs a projector
    /// ([`EngineParams::projector`](super::EngineParams::projector)); the prompt must end with
    /// text, as a chat template's assistant prefix does.
    #[cfg(feature = "mtmd")]
    pub fn media(mut self, media: Vec<crate::media::Media>) -> Request {
        self.media = media;
        self
    }

    /// The sampler chain (any: grammars, JSON Schema, Rust samplers).
    pub fn sampler(mut self, sampler: Sampler) -> Request {
        self.samplers = vec![sampler];
        self
    }

    /// `n` completions of one prompt: the prompt is decoded once and its cache shared. Each
    /// completion gets a clone of the sampler (same seed: use [`samplers`](Self::samplers) to
    /// give each its own).
    pub fn n(mut self, n: usize) -> Request {
        self.n = n.max(1);
        self
    }

    /// One completion per sampler, the prompt decoded once.
    pub fn samplers(mut self, samplers: Vec<Sampler>) -> Request {
        self.n = samplers.len().max(1);
        if !samplers.is_empty() {
            self.samplers = samplers;
        }
        self
    }

    /// Generation options: max tokens, stop strings, (top) log-probabilities, and how text
    /// prompts are tokenized. Prefix reuse is the engine's business and the cancel flag is
    /// replaced by [`Completion::cancel`].
    pub fn params(mut self, params: GenerateParams) -> Request {
        self.params = params;
        self
    }

    /// Ends the request with [`FinishReason::Deadline`] if it is not done within `after`, time
    /// spent waiting in the queue included.
    pub fn timeout(mut self, after: Duration) -> Request {
        self.deadline = Instant::now().checked_add(after);
        self
    }
}

/// Token counts of a finished completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens found in the cache (not decoded again).
    pub cached_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
}

/// Times of a finished completion.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RequestTimings {
    /// From submission until a slot took the request.
    pub queued: Duration,
    /// From submission until the first generated token.
    pub time_to_first_token: Duration,
    /// From submission until the end.
    pub total: Duration,
}

/// What happens to a request, in order: `Started`, then `Piece`s and one `Done` per
/// completion (or an `Error`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A slot took the request; `cached_tokens` of the prompt were already in the cache.
    Started {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Of those, found in the cache.
        cached_tokens: usize,
    },
    /// Text of completion `index` (UTF-8 complete; stop strings never appear, even partly).
    Piece {
        /// Which completion (0 unless [`Request::n`] > 1).
        index: usize,
        /// The token and its text.
        piece: Piece,
    },
    /// Completion `index` ended.
    Done {
        /// Which completion.
        index: usize,
        /// Why.
        finish: FinishReason,
        /// The stop string that ended it ([`FinishReason::Stop`]).
        stop: Option<String>,
        /// Token counts.
        usage: Usage,
        /// Times.
        timings: RequestTimings,
    },
    /// Completion `index` failed (a grammar dead end, a decode error, ...); other requests
    /// are unaffected.
    Error {
        /// Which completion.
        index: usize,
        /// What kind of failure: whose fault it is.
        kind: FailureKind,
        /// What went wrong.
        message: String,
    },
}

/// Why a completion failed ([`Event::Error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// Its sampler had nothing to pick: a grammar or schema with no valid continuation, or
    /// biases that rule out every token. The request's constraints are at fault.
    Sampling,
    /// llama.cpp failed to decode its batch, or the engine could not set the sequence up.
    Engine,
}

/// The events of one submitted request: iterate it (blocking, `for event in completion`) or,
/// with feature `async`, use it as a `futures::Stream` (`completion.next().await`). Dropping it
/// cancels the request within one engine step.
#[derive(Debug)]
pub struct Completion {
    pub(crate) rx: mpsc::Receiver<Event>,
    pub(crate) cancel: Arc<AtomicBool>,
}

impl Completion {
    /// Asks the engine to stop this request; it ends with [`FinishReason::Cancelled`].
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for the next event; `None` once the request is over. Must not be called from
    /// inside an async runtime (use the `Stream` there).
    pub fn recv(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }

    /// Runs to the end and returns each completion's text and how it ended, in index order.
    /// An `Error` event becomes `Err`.
    pub fn collect_text(self) -> Result<Vec<(String, FinishReason)>, String> {
        let mut out: Vec<(String, Option<FinishReason>)> = Vec::new();
        for event in self {
            match event {
                Event::Piece { index, piece } => {
                    if out.len() <= index {
                        out.resize(index + 1, (String::new(), None));
                    }
                    out[index].0.push_str(&piece.text);
                }
                Event::Done { index, finish, .. } => {
                    if out.len() <= index {
                        out.resize(index + 1, (String::new(), None));
                    }
                    out[index].1 = Some(finish);
                }
                Event::Error { message, .. } => return Err(message),
                Event::Started { .. } => {}
            }
        }
        out.into_iter().map(|(t, f)| f.map(|f| (t, f)).ok_or_else(|| "the engine stopped".to_string())).collect()
    }
}

/// A [`Completion`] as a blocking iterator (from `into_iter`). Not an `Iterator` impl on
/// `Completion` itself, so that `next()` on a completion means the `Stream`'s in async code.
#[derive(Debug)]
pub struct Events(Completion);

impl Events {
    /// The completion, e.g. to [`cancel`](Completion::cancel) it.
    pub fn completion(&self) -> &Completion {
        &self.0
    }
}

impl Iterator for Events {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.0.recv()
    }
}

impl IntoIterator for Completion {
    type Item = Event;
    type IntoIter = Events;

    fn into_iter(self) -> Events {
        Events(self)
    }
}

#[cfg(feature = "async")]
impl futures_core::Stream for Completion {
    type Item = Event;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// Why a request was not accepted. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The queue holds `max_queue` requests already: try again later (HTTP 503).
    #[error("the engine is busy: {0} requests are already queued")]
    Busy(usize),
    /// The prompt can never fit in the context.
    #[error("prompt of {prompt} tokens does not fit in the context of {n_ctx} tokens")]
    PromptTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Tokens one sequence can hold.
        n_ctx: usize,
    },
    /// `n` is larger than the engine's slots.
    #[error("{n} completions requested, the engine has {slots} slots")]
    TooManyCompletions {
        /// Completions asked for.
        n: usize,
        /// Slots.
        slots: usize,
    },
    /// The prompt is empty, could not be tokenized or rendered, or holds invalid tokens; or a
    /// sampler could not be cloned for `n` completions.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The engine has shut down.
    #[error("the engine has stopped")]
    Stopped,
}
