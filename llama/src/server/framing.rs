//! How a stream goes over HTTP: server-sent events (OpenAI's and Anthropic's streams) or
//! newline-delimited JSON (Ollama's).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;

/// How often an idle event stream sends a keep-alive: keeps proxies from timing out while a
/// long prompt is read, and lets a vanished client be noticed (the write fails).
const KEEP_ALIVE: Duration = Duration::from_secs(3);

/// An event whose data is `value` as one line of JSON, named when `name` is given.
pub fn event<T: Serialize>(name: Option<&str>, value: &T) -> Event {
    let event = Event::default().data(serde_json::to_string(value).unwrap_or_default());
    match name {
        Some(name) => event.event(name),
        None => event,
    }
}

/// An SSE response; idle, it sends a comment, or `keep_alive` when given (Anthropic's clients
/// drop comments but expect `ping` events).
pub fn sse<S>(events: S, keep_alive: Option<Event>) -> Response
where
    S: Stream<Item = Event> + Send + 'static,
{
    let mut every = KeepAlive::new().interval(KEEP_ALIVE);
    if let Some(e) = keep_alive {
        every = every.event(e);
    }
    Sse::new(events.map(Ok::<_, Infallible>)).keep_alive(every).into_response()
}

/// A newline-delimited JSON response: one object per line, no blank lines (a client parses
/// every line).
pub fn ndjson<S, T>(lines: S) -> Response
where
    S: Stream<Item = T> + Send + 'static,
    T: Serialize + Send + 'static,
{
    let body = Body::from_stream(lines.map(|v| {
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, Infallible>(line)
    }));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}
