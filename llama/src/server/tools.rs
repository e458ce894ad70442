//! Tool calling on `/v1/chat/completions`: OpenAI's `tools`, `tool_choice` and
//! `parallel_tool_calls` into a [`crate::tools::ChatRequest`], and parsed replies back into
//! OpenAI's `tool_calls` (whole, or as stream deltas keyed by `index`).

use crate::tools::{ChatDelta, ChatRequest, Tool, ToolChoice, ToolsError};
use crate::{ChatMessage, ToolCall};
use serde_json::{json, Value};

use crate::server::error::ApiError;
use crate::server::openai::{self, Delta, FunctionCallOut, ToolCallOut};

/// The library request when the body carries tools in OpenAI's chat form (`None`: a plain
/// chat); Ollama's chat sends the same form. A `tool_choice` without tools is refused rather
/// than ignored.
pub fn request(
    defs: &[openai::ToolDef],
    tool_choice: Option<&Value>,
    parallel: bool,
    messages: Vec<ChatMessage>,
) -> Result<Option<ChatRequest>, ApiError> {
    if defs.is_empty() {
        return match tool_choice {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s == "none" || s == "auto" => Ok(None),
            Some(_) => Err(ApiError::invalid("tool_choice", "`tool_choice` needs `tools`")),
        };
    }
    let mut tools = Vec::with_capacity(defs.len());
    for (i, d) in defs.iter().enumerate() {
        if d.kind != "function" {
            return Err(ApiError::invalid(
                format!("tools[{i}].type"),
                format!("only \"function\" tools exist, got {:?}", d.kind),
            ));
        }
        let f = &d.function;
        tools.push(tool(
            &format!("tools[{i}].function.parameters"),
            &f.name,
            f.description.as_deref(),
            f.parameters.as_ref(),
        )?);
    }
    let choice = match tool_choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("expected \"none\", \"auto\", \"required\" or a function, got {other:?}"),
                ))
            }
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if v.get("type").and_then(Value::as_str) == Some("function") => {
                ToolChoice::Function(name.to_string())
            }
            _ => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    "expected {\"type\": \"function\", \"function\": {\"name\": ...}}",
                ))
            }
        },
    };
    Ok(Some(ChatRequest::new(messages).tools(tools).tool_choice(choice).parallel_tool_calls(parallel)))
}

/// A function the model may call, from any protocol's definition; `at` names the parameters'
/// field for errors. A function without parameters takes none.
pub fn tool(at: &str, name: &str, description: Option<&str>, parameters: Option<&Value>) -> Result<Tool, ApiError> {
    let parameters = parameters.cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    if !parameters.is_object() {
        return Err(ApiError::invalid(at, "the parameters must be a JSON Schema object"));
    }
    Ok(Tool::new(name, description.unwrap_or_default(), parameters))
}

/// A 400 naming `tools` (a schema no grammar can express, an unknown function, ...).
pub fn render_error(e: ToolsError) -> ApiError {
    let param = if matches!(e, ToolsError::UnknownFunction(_)) { "tool_choice" } else { "tools" };
    ApiError::invalid(param, format!("the tools cannot be used with this model: {e}"))
}

/// A parsed reply's tool calls as a response message lists them.
pub fn calls_out(calls: &[ToolCall]) -> Option<Vec<ToolCallOut>> {
    (!calls.is_empty()).then(|| {
        calls
            .iter()
            .map(|c| ToolCallOut {
                index: None,
                id: Some(c.id.clone()),
                kind: Some("function"),
                function: FunctionCallOut { name: Some(c.name.clone()), arguments: c.arguments.clone() },
            })
            .collect()
    })
}

/// Stream deltas as OpenAI chunk deltas: a call's id, type and name first, then its arguments
/// in fragments, each keyed by the call's `index`.
pub fn delta(d: ChatDelta) -> Delta {
    match d {
        ChatDelta::Content(text) => Delta { content: Some(text), ..Delta::default() },
        ChatDelta::Reasoning(text) => Delta { reasoning_content: Some(text), ..Delta::default() },
        ChatDelta::ToolCallStart { index, id, name } => Delta {
            tool_calls: Some(vec![ToolCallOut {
                index: Some(index),
                id: Some(id),
                kind: Some("function"),
                function: FunctionCallOut { name: Some(name), arguments: String::new() },
            }]),
            ..Delta::default()
        },
        ChatDelta::ToolCallArguments { index, fragment } => Delta {
            tool_calls: Some(vec![ToolCallOut {
                index: Some(index),
                id: None,
                kind: None,
                function: FunctionCallOut { name: None, arguments: fragment },
            }]),
            ..Delta::default()
        },
    }
}
