//! From the request's messages or prompt to the engine's [`Prompt`], with the images and audio
//! the messages carry, refusing what this server cannot honour instead of silently dropping it.

use crate::engine::Prompt;
use crate::{ChatMessage, Token, ToolCall};
use serde_json::Value;

use crate::server::error::ApiError;
use crate::server::media::{self, Attached};
use crate::server::openai::{Content, Message, PromptInput};

/// The conversation: roles checked, text parts joined, tool calls and results kept; images
/// (`image_url` data URLs) and audio (`input_audio`) read, each placed where its part stood.
pub fn chat(messages: &[Message]) -> Result<(Vec<ChatMessage>, Vec<Attached>), ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must hold at least one message"));
    }
    let mut out = Vec::with_capacity(messages.len());
    let mut attached = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            // OpenAI's newer name for the system role; chat templates know only `system`.
            "developer" => "system",
            r @ ("system" | "user" | "assistant" | "tool") => r,
            other => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role"),
                    format!("unknown role {other:?} (expected system, developer, user, assistant or tool)"),
                ))
            }
        };
        let text = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    let at = |field: &str| format!("messages[{i}].content[{j}].{field}");
                    let bytes = match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => {
                            text.push_str(t);
                            continue;
                        }
                        ("image_url", _) => {
                            let url = p.image_url.as_ref().ok_or_else(|| {
                                ApiError::invalid(at("image_url"), "an image_url part needs `image_url`")
                            })?;
                            media::data_url(&at("image_url.url"), url.url())?
                        }
                        ("input_audio", _) => {
                            let audio = p.input_audio.as_ref().ok_or_else(|| {
                                ApiError::invalid(at("input_audio"), "an input_audio part needs `input_audio`")
                            })?;
                            media::base64(&at("input_audio.data"), &audio.data)?
                        }
                        ("text", None) => {
                            return Err(ApiError::invalid(
                                format!("messages[{i}].content[{j}].text"),
                                "a text part needs `text`",
                            ))
                        }
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                format!("messages[{i}].content[{j}].type"),
                                format!(
                                    "content parts of type {kind:?} are not supported (only \"text\", \"image_url\" and \"input_audio\")"
                                ),
                            ))
                        }
                    };
                    attached.push(Attached { param: at("type"), message: i, offset: text.len(), bytes });
                }
                text
            }
        };
        if role != "user" && attached.last().is_some_and(|a| a.message == i) {
            return Err(ApiError::invalid(
                format!("messages[{i}].content"),
                "images and audio are read in user messages only",
            ));
        }
        let mut message = ChatMessage::new(role, text);
        for (j, call) in m.tool_calls.iter().flatten().enumerate() {
            if call.kind.as_deref().is_some_and(|k| k != "function") {
                return Err(ApiError::invalid(
                    format!("messages[{i}].tool_calls[{j}].type"),
                    "only \"function\" calls exist",
                ));
            }
            let arguments = match &call.function.arguments {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let id = call.id.clone().unwrap_or_default();
            message.tool_calls.push(ToolCall { id, name: call.function.name.clone(), arguments });
        }
        message.tool_call_id = m.tool_call_id.clone();
        message.reasoning_content = m.reasoning_content.clone();
        out.push(message);
    }
    Ok((out, attached))
}

/// The one prompt of a text completion (several prompts in one request are not served).
pub fn completion(input: &PromptInput) -> Result<Prompt, ApiError> {
    let one = |n: usize| {
        if n == 1 {
            Ok(())
        } else {
            Err(ApiError::invalid("prompt", format!("exactly one prompt per request is served, got {n}")))
        }
    };
    match input {
        PromptInput::Texts(texts) => {
            one(texts.len())?;
            Ok(Prompt::Text(texts[0].clone()))
        }
        PromptInput::Tokens(lists) => {
            one(lists.len())?;
            Ok(Prompt::Tokens(tokens("prompt", &lists[0])?))
        }
    }
}

/// Token ids from JSON integers (the vocabulary check comes later, with the model).
pub fn tokens(param: &str, ids: &[i64]) -> Result<Vec<Token>, ApiError> {
    ids.iter()
        .map(|&t| {
            i32::try_from(t)
                .map(Token)
                .map_err(|_| ApiError::invalid(param, format!("token id {t} is not in the vocabulary")))
        })
        .collect()
}
