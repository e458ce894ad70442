//! Every failure a client can see, as OpenAI's error body:
//! `{"error": {"message", "type", "param", "code"}}` with a real status code.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use llama::engine::SubmitError;
use llama::SamplerBuildError;
use serde::Serialize;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
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

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// A 400 about one request field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::bad_request(message).param(param)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing or wrong API key: send it as `Authorization: Bearer <key>`",
        )
        .code("invalid_api_key")
    }

    pub fn model_not_found(name: &str, known: &[String]) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("the model `{name}` does not exist (served: {})", known.join(", ")),
        )
        .param("model")
        .code("model_not_found")
    }

    pub fn route_not_found(path: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("no route for {path}"))
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method not allowed on this path")
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
        .code("request_too_large")
    }

    pub fn busy(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).code("server_busy");
        e.retry_after = Some(1);
        e
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
    }

    /// A failure of the server itself (a model file that does not load, a decode error): never
    /// caused by what a client sent.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    pub fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
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

    pub fn from_sampler(param: &str, e: SamplerBuildError) -> ApiError {
        ApiError::invalid(param, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
