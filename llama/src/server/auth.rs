//! `--api-key`: every route but `/health` (which load balancers probe without credentials)
//! needs `Authorization: Bearer <key>`, or `x-api-key: <key>` as Anthropic's clients send it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::server::error::ApiError;

/// Compares in time independent of where the strings differ, so response timing does not
/// reveal how much of a guessed key was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) async fn middleware(State(key): State<Option<Arc<str>>>, req: Request, next: Next) -> Response {
    let Some(key) = key else { return next.run(req).await };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
        .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim));
    match given {
        Some(g) if same(g.as_bytes(), key.as_bytes()) => next.run(req).await,
        _ => ApiError::unauthorized().into_response(),
    }
}
