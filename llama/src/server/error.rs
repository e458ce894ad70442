//! Every failure a client can see, with a real status code and the body of the protocol the
//! client speaks: OpenAI's `{"error": {"message", "type", "param", "code"}}` by default,
//! Anthropic's `{"type": "error", "error": {"type", "message"}}` on its routes, Ollama's
//! `{"error": "..."}` on `/api/`.

use crate::engine::SubmitError;
use crate::SamplerBuildError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// A refusal or failure as a client sees it: an HTTP status and OpenAI's error body. Framework-
/// free: [`body`](Self::body) is the JSON, `status` and `retry_after` the rest; with axum it is
/// a response as it is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// OpenAI's `type`: `invalid_request_error` or `server_error`.
    pub kind: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// A stable machine-readable reason (`model_not_found`, `server_busy`, ...).
    pub code: Option<&'static str>,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, message: message.into(), param: None, code: None, retry_after: None }
    }

    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// A 400 about one request field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::bad_request(message).param(param)
    }

    /// A 401: the API key is missing or wrong.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing or wrong API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`",
        )
        .code("invalid_api_key")
    }

    /// A 404 naming the models there are.
    pub fn model_not_found(name: &str, known: &[String]) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("the model `{name}` does not exist (served: {})", known.join(", ")),
        )
        .param("model")
        .code("model_not_found")
    }

    /// A 404 for a path with no route.
    pub fn route_not_found(path: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("no route for {path}"))
    }

    /// A 405.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method not allowed on this path")
    }

    /// A 413: the body is over `limit` bytes.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
        .code("request_too_large")
    }

    /// A 503 worth retrying in a second: the queue is full.
    pub fn busy(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).code("server_busy");
        e.retry_after = Some(1);
        e
    }

    /// A 501: a route this server has on purpose, to say what it does not do.
    pub fn not_implemented(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_IMPLEMENTED, "invalid_request_error", message)
    }

    /// A 503: the model is not available now.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
    }

    /// A failure of the server itself (a model file that does not load, a decode error): never
    /// caused by what a client sent.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// Names the request field at fault.
    pub fn param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// Sets the machine-readable reason.
    pub fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// Sent as `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// A 415: the body is declared as something other than JSON.
    pub fn not_json(declared: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            format!("the body is declared as {declared:?}: send it as `Content-Type: application/json`"),
        )
        .code("unsupported_media_type")
    }

    /// A 421 (DNS rebinding guard): the request names a host this server does not answer for.
    pub fn wrong_host(host: &str) -> ApiError {
        ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "invalid_request_error",
            format!("this server does not answer for host {host:?} (allow it with --allow-host)"),
        )
        .code("host_not_allowed")
    }

    /// A 403: a web page from another origin tried to use the API.
    pub fn wrong_origin(origin: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            format!("requests from web pages at {origin:?} are not allowed (allow the origin with --allow-origin)"),
        )
        .code("origin_not_allowed")
    }

    /// Anthropic's error body: its `type` follows from the status.
    pub fn anthropic_body(&self) -> serde_json::Value {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 if self.code == Some("server_busy") => "overloaded_error",
            500.. => "api_error",
            _ => "invalid_request_error",
        };
        serde_json::json!({"type": "error", "error": {"type": kind, "message": self.message}})
    }

    /// Ollama's error body.
    pub fn ollama_body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.message })
    }

    /// The JSON body, also used as an SSE `data:` payload once a stream has begun.
    pub fn body(&self) -> serde_json::Value {
        let detail = Detail { message: &self.message, kind: self.kind, param: self.param.as_deref(), code: self.code };
        serde_json::to_value(Body { error: detail }).unwrap_or(serde_json::Value::Null)
    }

    /// `prompt_param` names the field that held the prompt (`messages` or `prompt`).
    pub fn from_submit(e: SubmitError, prompt_param: &str) -> ApiError {
        match e {
            SubmitError::Busy(_) => ApiError::busy(format!("{e}; retry shortly")),
            SubmitError::PromptTooLong { .. } => {
                ApiError::bad_request(e.to_string()).param(prompt_param).code("context_length_exceeded")
            }
            SubmitError::TooManyCompletions { .. } => ApiError::invalid("n", e.to_string()),
            SubmitError::Stopped => ApiError::unavailable("the model is shutting down"),
            _ => ApiError::bad_request(e.to_string()),
        }
    }

    /// A sampler option the model cannot take (a token id outside its vocabulary, say).
    pub fn from_sampler(param: &str, e: SamplerBuildError) -> ApiError {
        ApiError::invalid(param, e.to_string())
    }
}

/// Whose error body a route answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    OpenAi,
    Anthropic,
    Ollama,
}

impl Protocol {
    fn of(path: &str) -> Protocol {
        if path.starts_with("/api/") {
            Protocol::Ollama
        } else if path.starts_with("/v1/messages") {
            Protocol::Anthropic
        } else {
            Protocol::OpenAi
        }
    }
}

impl ApiError {
    fn respond(&self, protocol: Protocol) -> Response {
        let body = match protocol {
            Protocol::OpenAi => self.body(),
            Protocol::Anthropic => self.anthropic_body(),
            Protocol::Ollama => self.ollama_body(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            // The OpenAI and Anthropic clients retry every 5xx twice unless told not to: a
            // failure of the server's own (a model that does not load) will not pass by itself.
            response.headers_mut().insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.respond(Protocol::OpenAi);
        // For `reshape`, which answers in the route's protocol.
        response.extensions_mut().insert(self);
        response
    }
}

/// Rewrites every error response (from a handler, an extractor, the key check, the host and
/// origin guard) into the body of the protocol its path belongs to.
pub(crate) async fn reshape(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let protocol = Protocol::of(req.uri().path());
    let mut response = next.run(req).await;
    match response.extensions_mut().remove::<ApiError>() {
        Some(error) if protocol != Protocol::OpenAi => error.respond(protocol),
        _ => response,
    }
}
