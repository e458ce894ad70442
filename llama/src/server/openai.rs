//! OpenAI wire types, written for this server rather than taken from a client crate: requests
//! are lenient the way real clients need (a `stop` string or list, content given as a string
//! or as text parts, `null` meaning "unset", unknown fields ignored), responses follow
//! OpenAI's shapes field for field.
//!
//! Fields are named and mean what OpenAI's API reference says; they are not documented again
//! here.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Options shared by chat and text completions, parsed from the same body as the request
/// itself (not `#[serde(flatten)]`ed into it: flattening loses the field path in errors).
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<i64>,
    pub stop: Option<Stop>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub n: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Token id (as a string, JSON keys being strings) → bias in -100..=100.
    pub logit_bias: Option<BTreeMap<String, f64>>,
    /// Shows up in the request's log line.
    pub user: Option<String>,
    // Extensions most local servers accept.
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    /// A GBNF grammar the output must follow.
    pub grammar: Option<String>,
    pub keep_alive: Option<KeepAliveValue>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub max_completion_tokens: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub response_format: Option<ResponseFormat>,
    /// Functions the model may call (`{"type": "function", "function": {...}}`).
    pub tools: Option<Vec<ToolDef>>,
    /// `"none"`, `"auto"`, `"required"` or `{"type": "function", "function": {"name": ...}}`.
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ToolDef {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema object; absent means no arguments.
    pub parameters: Option<Value>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptInput,
    /// The legacy API's number of top log-probabilities per token (0..=5).
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    pub input: PromptInput,
    pub model: Option<String>,
    pub encoding_format: Option<String>,
    pub dimensions: Option<i64>,
    pub user: Option<String>,
    pub keep_alive: Option<KeepAliveValue>,
}

/// `POST /tokenize`.
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    pub content: String,
    pub add_special: Option<bool>,
    pub with_pieces: Option<bool>,
}

/// `POST /detokenize`.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<i64>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
    /// An assistant message's calls, sent back with the results in the next turn.
    pub tool_calls: Option<Vec<WireToolCall>>,
    /// A tool message: the call it answers.
    pub tool_call_id: Option<String>,
    pub reasoning_content: Option<String>,
}

/// A tool call as clients send it back: arguments as JSON text (OpenAI) or as an object.
#[derive(Debug, Deserialize)]
pub struct WireToolCall {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: WireFunctionCall,
}

#[derive(Debug, Deserialize)]
pub struct WireFunctionCall {
    pub name: String,
    pub arguments: Value,
}

/// A message's content: a string, or an array of parts of which only text is served.
#[derive(Debug)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    pub image_url: Option<ImageUrl>,
    pub input_audio: Option<InputAudio>,
}

/// An `image_url` part's image: the URL alone, or with its `detail`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ImageUrl {
    Url(String),
    Object { url: String },
}

impl ImageUrl {
    pub fn url(&self) -> &str {
        match self {
            ImageUrl::Url(u) | ImageUrl::Object { url: u } => u,
        }
    }
}

/// An `input_audio` part's clip: base64 of a WAV or MP3 file.
#[derive(Debug, Deserialize)]
pub struct InputAudio {
    pub data: String,
    #[serde(default)]
    pub format: Option<String>,
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Content, E> {
                Ok(Content::Text(s.to_string()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Content, E> {
                Ok(Content::Text(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::new();
                while let Some(p) = seq.next_element()? {
                    parts.push(p);
                }
                Ok(Content::Parts(parts))
            }
        }
        d.deserialize_any(V)
    }
}

/// `stop`: one string or several.
#[derive(Debug, Default)]
pub struct Stop(pub Vec<String>);

impl<'de> Deserialize<'de> for Stop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Stop;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Stop, E> {
                Ok(Stop(vec![s.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Stop, A::Error> {
                let mut all = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    all.push(s);
                }
                Ok(Stop(all))
            }
        }
        d.deserialize_any(V)
    }
}

/// A prompt or embedding input: text, texts, tokens, or lists of tokens.
#[derive(Debug)]
pub enum PromptInput {
    Texts(Vec<String>),
    Tokens(Vec<Vec<i64>>),
}

impl<'de> Deserialize<'de> for PromptInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PromptInput;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an array of strings, an array of token ids or an array of such arrays")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PromptInput, E> {
                Ok(PromptInput::Texts(vec![s.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptInput, A::Error> {
                let ids =
                    |v: &Value| v.as_array().and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>());
                let (mut texts, mut flat, mut nested) = (Vec::new(), Vec::new(), Vec::new());
                while let Some(item) = seq.next_element::<Value>()? {
                    match item {
                        Value::String(s) => texts.push(s),
                        Value::Number(n) => flat.push(
                            n.as_i64().ok_or_else(|| de::Error::custom(format!("token ids are integers, got {n}")))?,
                        ),
                        other => nested.push(ids(&other).ok_or_else(|| {
                            de::Error::custom("expected a string, a token id or an array of token ids")
                        })?),
                    }
                }
                match (texts.is_empty(), flat.is_empty(), nested.is_empty()) {
                    (_, true, true) => Ok(PromptInput::Texts(texts)),
                    (true, false, true) => Ok(PromptInput::Tokens(vec![flat])),
                    (true, true, false) => Ok(PromptInput::Tokens(nested)),
                    _ => Err(de::Error::custom("an input array must not mix strings, token ids and token arrays")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `keep_alive`: a duration string (`"5m"`, `"1h30m"`, `"-1"`) or a number of seconds.
#[derive(Debug, Clone)]
pub enum KeepAliveValue {
    Text(String),
    Seconds(f64),
}

impl<'de> Deserialize<'de> for KeepAliveValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeepAliveValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"5m\" or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<KeepAliveValue, E> {
                Ok(KeepAliveValue::Text(s.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeepAliveValue, E> {
                Ok(KeepAliveValue::Seconds(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeepAliveValue, E> {
                Ok(KeepAliveValue::Seconds(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeepAliveValue, E> {
                Ok(KeepAliveValue::Seconds(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat {
    pub schema: Option<Value>,
}

// ---- Responses ----

#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, cached_tokens: usize, completion_tokens: usize) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    /// `null` when the reply is only tool calls.
    pub content: Option<String>,
    pub refusal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallOut>>,
}

/// A tool call in a reply, or (with `index`, and only what is new) in a stream delta.
#[derive(Debug, Serialize)]
pub struct ToolCallOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionCallOut,
}

#[derive(Debug, Serialize)]
pub struct FunctionCallOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

#[derive(Debug, Default, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<TokenLogprob>,
    pub refusal: Option<Vec<TokenLogprob>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<Vec<TokenLogprob>>,
}

#[derive(Debug, Serialize)]
pub struct ChatChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    pub system_fingerprint: Option<String>,
    /// Present (as `null` until the last chunk) only when `include_usage` was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallOut>>,
}

#[derive(Debug, Serialize)]
pub struct TextCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<TextChoice>,
    /// `None` only in stream chunks before the last (and then omitted when usage was not
    /// asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TextChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<TextLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// The legacy completions API's log-probabilities: parallel arrays.
#[derive(Debug, Default, Serialize)]
pub struct TextLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<BTreeMap<String, f32>>,
    pub text_offset: Vec<usize>,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingList {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingData {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

/// A model as `/v1/models` lists it; `loaded` and `expires_at` are this server's additions.
#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// `completion`, plus `vision` and `audio` for a model served with a projector that takes them.
    pub capabilities: Vec<&'static str>,
    pub loaded: bool,
    /// Unix time at which an idle loaded model is unloaded; `null` when it is not loaded,
    /// is serving a request, or is kept forever.
    pub expires_at: Option<u64>,
}
