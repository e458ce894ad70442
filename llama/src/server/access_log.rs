//! One log line per request, written when its last byte is sent (for a stream, at its end,
//! with the token counts), plus the HTTP counters of `/metrics` and an `x-request-id`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

use crate::server::metrics::HttpMetrics;

/// What a handler reports for the log line.
#[derive(Debug, Default)]
pub struct RequestRecord {
    pub prompt_tokens: AtomicUsize,
    pub completion_tokens: AtomicUsize,
    /// The request's `user` field.
    pub user: OnceLock<String>,
}

/// The fixed set of route labels, so that `/metrics` cannot grow with arbitrary paths.
fn route(path: &str) -> &'static str {
    const ROUTES: [&str; 9] = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/health",
        "/metrics",
        "/tokenize",
        "/detokenize",
        "/v1/models/{model}",
    ];
    ROUTES.iter().copied().find(|r| *r == path).unwrap_or(if path.starts_with("/v1/models/") {
        "/v1/models/{model}"
    } else {
        "other"
    })
}

/// Logs on drop: whether the response was sent in full, or the client left first.
struct Entry {
    id: u64,
    method: Method,
    path: String,
    started: Instant,
    status: Option<u16>,
    record: Arc<RequestRecord>,
    http: Arc<HttpMetrics>,
    complete: AtomicBool,
}

impl Drop for Entry {
    fn drop(&mut self) {
        // 499: the client closed the connection before the answer was ready (nginx's code).
        let status = self.status.unwrap_or(499);
        self.http.finished(route(&self.path), status);
        let (p, c) =
            (self.record.prompt_tokens.load(Ordering::Relaxed), self.record.completion_tokens.load(Ordering::Relaxed));
        let tokens = if p + c > 0 { format!(" prompt={p} completion={c}") } else { String::new() };
        let user = self.record.user.get().map(|u| format!(" user={u:?}")).unwrap_or_default();
        let gone = if self.status.is_some() && !self.complete.load(Ordering::Relaxed) { " (client gone)" } else { "" };
        eprintln!(
            "#{} {} {} {status}{tokens} {:.3}s{user}{gone}",
            self.id,
            self.method,
            self.path,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// The response body, watched to the end.
struct Logged {
    inner: Body,
    entry: Entry,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.entry.complete.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pub async fn middleware(State(http): State<Arc<HttpMetrics>>, mut req: Request, next: Next) -> Response {
    static IDS: AtomicU64 = AtomicU64::new(1);
    let record = Arc::new(RequestRecord::default());
    req.extensions_mut().insert(record.clone());
    http.started();
    let mut entry = Entry {
        id: IDS.fetch_add(1, Ordering::Relaxed),
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        started: Instant::now(),
        status: None,
        record,
        http,
        complete: AtomicBool::new(false),
    };
    let mut response = next.run(req).await;
    entry.status = Some(response.status().as_u16());
    response.headers_mut().insert("x-request-id", HeaderValue::from(entry.id));
    response.map(|inner| {
        let done = inner.is_end_stream();
        entry.complete.store(done, Ordering::Relaxed);
        Body::new(Logged { inner, entry })
    })
}
