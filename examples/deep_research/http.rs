//! The same pipeline against an OpenAI-compatible server (this crate's server example, Ollama,
//! llama.cpp's server): streamed chat completions, `response_format` for the schemas.

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::backend::{Ask, Backend, Error, Reply};

pub struct Http {
    agent: ureq::Agent,
    base: String,
    model: String,
    api_key: Option<String>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Default, Deserialize)]
struct Delta {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    completion_tokens: usize,
}

#[derive(Deserialize)]
struct ApiError {
    message: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ApiError,
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

impl Http {
    /// A client for the server at `base` (as OpenAI clients take it, e.g.
    /// `http://127.0.0.1:8080/v1`). Without `model`, the first model the server lists.
    pub fn connect(base: &str, model: Option<&str>, api_key: Option<String>) -> Result<Http, Error> {
        if !base.starts_with("http://") {
            return Err(format!(
                "--url {base}: give an http:// base URL such as http://127.0.0.1:8080/v1 \
                 (this example speaks plain HTTP, to servers on your machine or network)"
            )
            .into());
        }
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            // Error statuses carry the server's message in the body: read it rather than fail.
            .http_status_as_error(false)
            .build()
            .into();
        let mut http = Http { agent, base: base.trim_end_matches('/').to_string(), model: String::new(), api_key };
        http.model = match model {
            Some(m) => m.to_string(),
            None => http.first_model()?,
        };
        Ok(http)
    }

    fn first_model(&self) -> Result<String, Error> {
        let mut request = self.agent.get(format!("{}/models", self.base));
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let response = request.call().map_err(|e| format!("{}/models: {e}", self.base))?;
        let (status, mut body) = (response.status(), response.into_body());
        let text = body.read_to_string()?;
        if !status.is_success() {
            return Err(format!("{}/models answered {status}: {}", self.base, error_message(&text)).into());
        }
        let list: ModelList = serde_json::from_str(&text).map_err(|e| format!("{}/models: {e}", self.base))?;
        let first = list.data.into_iter().next().ok_or("the server lists no models: pass --model NAME")?;
        Ok(first.id)
    }

    /// The model requests go to.
    pub fn model(&self) -> &str {
        &self.model
    }
}

/// The message of an OpenAI error body, else the body itself.
fn error_message(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body).map(|b| b.error.message).unwrap_or_else(|_| body.trim().to_string())
}

impl Backend for Http {
    fn ask(&self, ask: &Ask, cancel: &AtomicBool, on_token: &mut dyn FnMut(&str)) -> Result<Reply, Error> {
        let mut body = json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": ask.system},
                {"role": "user", "content": ask.user},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": ask.max_tokens,
            "temperature": ask.temperature,
            "top_p": 0.95,
            "seed": ask.seed,
        });
        if let Some(schema) = &ask.schema {
            body["response_format"] =
                json!({"type": "json_schema", "json_schema": {"name": "answer", "strict": true, "schema": schema}});
        }
        let url = format!("{}/chat/completions", self.base);
        let mut request = self.agent.post(&url).content_type("application/json");
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let response = request.send(body.to_string()).map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let reader = response.into_body().into_reader();
        if !status.is_success() {
            let mut text = String::new();
            let _ = reader.take(64 << 10).read_to_string(&mut text);
            return Err(format!("{url} answered {status}: {}", error_message(&text)).into());
        }
        let mut reply = Reply::default();
        let mut usage = None;
        // Server-sent events, one `data:` line each. Returning drops the connection, which is
        // how a client cancels: the server stops generating.
        for line in BufReader::new(reader).lines() {
            if cancel.load(Ordering::Relaxed) {
                return Ok(reply);
            }
            let line = line?;
            let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
            if data == "[DONE]" {
                break;
            }
            let chunk: Chunk = serde_json::from_str(data).map_err(|e| format!("{url}: bad stream chunk: {e}"))?;
            if let Some(e) = chunk.error {
                return Err(format!("{url}: {}", e.message).into());
            }
            for choice in chunk.choices {
                if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                    reply.text.push_str(&text);
                    reply.tokens += 1;
                    on_token(&text);
                }
                if let Some(reason) = choice.finish_reason {
                    reply.cut = reason == "length";
                }
            }
            usage = chunk.usage.or(usage);
        }
        // Chunks may hold several tokens; the usage, where the server sends it, is exact.
        if let Some(u) = usage {
            reply.tokens = u.completion_tokens;
        }
        Ok(reply)
    }
}
