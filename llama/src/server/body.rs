//! Reading a JSON request body: declared as JSON or not at all (415: the types a web page may
//! send cross-site without a CORS preflight are refused), size-limited (413), and every parse
//! failure a 400 in OpenAI's error shape naming the offending field. axum's own `Json` extractor answers 422 and plain
//! text, which OpenAI clients do not expect.

use axum::body::Body;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::header;
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::server::error::ApiError;

/// Largest request body accepted, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The request body, read under the size limit; parse it with [`parse`] (several times, into
/// several types, when a request's fields are split across types).
#[derive(Debug)]
pub struct Limited(pub Vec<u8>);

/// A request body parsed as `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S> FromRequest<S> for Limited
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let BodyLimit(limit) = BodyLimit::from_ref(state);
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("\u{fffd}");
            if !is_json(ct) {
                return Err(ApiError::not_json(ct));
            }
        }
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        read_limited(req.into_body(), limit, declared).await.map(Limited)
    }
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Limited(bytes) = Limited::from_request(req, state).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// `application/json` or a `+json` type, with any parameters. A body without a declared type is
/// read as JSON too: browsers declare one on every cross-site request they send unasked.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads at most `limit` bytes. An oversized body is still read (and thrown away) up to a
/// bound, because a client that is still sending when the server answers and closes usually
/// sees a broken pipe instead of the 413.
async fn read_limited(body: Body, limit: usize, declared: Option<u64>) -> Result<Vec<u8>, ApiError> {
    let drain_cap = limit.saturating_mul(8).max(64 << 20);
    let mut too_large = declared.is_some_and(|n| n > limit as u64);
    let mut buf = Vec::new();
    let mut seen = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        seen = seen.saturating_add(chunk.len());
        if seen > limit {
            too_large = true;
        }
        if too_large {
            if seen > drain_cap {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if too_large {
        return Err(ApiError::too_large(limit));
    }
    Ok(buf)
}

/// Parses `bytes` as `T`; the error names the JSON path of the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty: send a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." && path != "?" => {
                ApiError::invalid(path.clone(), format!("invalid value for `{path}`: {inner}"))
            }
            serde_json::error::Category::Data => ApiError::bad_request(format!("invalid request: {inner}")),
            _ => ApiError::bad_request(format!("the request body is not valid JSON: {inner}")),
        }
    })?;
    de.end().map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// The string `name` of `item` (a content block or input item found at `at`), or a 400 naming
/// it: for the protocols whose items are told apart by their `type`, read as JSON values.
pub fn required_str(item: &serde_json::Value, at: &str, name: &str) -> Result<String, ApiError> {
    item.get(name)
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ApiError::invalid(format!("{at}.{name}"), format!("this item needs the string `{name}`")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_types_pass_and_simple_request_types_do_not() {
        for ok in
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"]
        {
            assert!(super::is_json(ok), "{ok}");
        }
        for bad in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "json"] {
            assert!(!super::is_json(bad), "{bad}");
        }
    }
}
