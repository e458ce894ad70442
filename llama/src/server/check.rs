//! A request body read and checked before any model is touched: what the handlers do first,
//! framework-free (bytes in, a checked request or an [`ApiError`] out), and what the `server`
//! fuzz target (`llama/fuzz`) drives with arbitrary bodies.

use crate::engine::Prompt;
use crate::server::body;
use crate::server::error::ApiError;
use crate::server::generation::Shape;
use crate::server::keep_alive::KeepAlive;
use crate::server::media::Attached;
use crate::server::openai::{ChatRequest, CompletionRequest, EmbeddingRequest, Options, PromptInput};
use crate::server::plan::{self, Plan};
use crate::server::{prompt, tools};
use crate::tools::{ChatTemplates, RenderedChat};
use crate::{ChatMessage, Model, Sampler};

/// Most texts one embedding request may carry (OpenAI's limit).
const MAX_EMBEDDING_INPUTS: usize = 2048;

/// A generation request read and checked before any model is touched: what the handlers do
/// first, and what the `server` fuzz target (`llama/fuzz`) drives with arbitrary bodies.
pub struct Checked {
    /// The samplers and limits asked for.
    pub plan: Plan,
    pub(crate) shape: Shape,
    /// What the model is asked.
    pub input: Input,
    /// The images and audio its messages carry, decoded once the model is known.
    pub media: Vec<Attached>,
    /// The client's `user` field, for the access log.
    pub user: Option<String>,
}

/// What the model is asked: a prompt, or a chat with tools that the model's template renders.
pub enum Input {
    /// Text, tokens or a chat the engine renders with the model's template.
    Prompt(Prompt),
    /// A chat with tools, for [`render_tools`].
    Tools(crate::tools::ChatRequest),
}

/// `POST /v1/chat/completions`'s body, checked.
pub fn chat(body: &[u8]) -> Result<Checked, ApiError> {
    let req: ChatRequest = body::parse(body)?;
    let options: Options = body::parse(body)?;
    let logprobs = plan::chat_logprobs(req.logprobs, req.top_logprobs)?;
    let max_tokens = req
        .max_completion_tokens
        .map(|v| ("max_completion_tokens", v))
        .or(options.max_tokens.map(|v| ("max_tokens", v)));
    let plan = Plan::new(&options, max_tokens, logprobs, req.response_format.as_ref())?;
    let (messages, media) = prompt::chat(&req.messages)?;
    let defs = req.tools.as_deref().unwrap_or_default();
    let parallel = req.parallel_tool_calls.unwrap_or(false);
    let tools = tools::request(defs, req.tool_choice.as_ref(), parallel, messages.clone())?;
    let talk = Chat {
        messages,
        media,
        tools,
        logprobs: logprobs.is_some(),
        prompt_param: "messages",
        format_param: "response_format",
    };
    talk.checked(plan, options.user)
}

/// A chat of any protocol, mapped: what [`Chat::checked`] turns into a [`Checked`].
pub(crate) struct Chat {
    pub messages: Vec<ChatMessage>,
    /// Images and audio placed in the messages.
    pub media: Vec<Attached>,
    /// With tools: the request the model's template renders.
    pub tools: Option<crate::tools::ChatRequest>,
    pub logprobs: bool,
    /// The field that held the conversation, and the one a JSON format is asked for in.
    pub prompt_param: &'static str,
    pub format_param: &'static str,
}

impl Chat {
    /// The checked request: tools, or else the plain chat; never both tools and an output
    /// constraint (the tool-call grammar is one already).
    pub fn checked(self, plan: Plan, user: Option<String>) -> Result<Checked, ApiError> {
        if self.tools.is_some() && plan.constrained() {
            let format = self.format_param;
            return Err(ApiError::invalid(
                "tools",
                format!("give either `tools` or a `grammar`/JSON `{format}`, not both"),
            ));
        }
        let shape = Shape {
            n: plan.n,
            logprobs: self.logprobs,
            constrained: plan.constrained() || self.tools.is_some(),
            prompt_param: self.prompt_param,
            tools: None,
        };
        if self.tools.is_some() {
            if let Some(a) = self.media.first() {
                return Err(ApiError::invalid(&a.param, "images and audio with `tools` are not supported yet"));
            }
        }
        let input = match self.tools {
            Some(tools) => Input::Tools(tools),
            None => Input::Prompt(Prompt::Chat(self.messages)),
        };
        Ok(Checked { plan, shape, input, media: self.media, user })
    }
}

/// `POST /v1/completions`'s body, checked.
pub fn completion(body: &[u8]) -> Result<Checked, ApiError> {
    let req: CompletionRequest = body::parse(body)?;
    let options: Options = body::parse(body)?;
    if req.echo == Some(true) {
        return Err(ApiError::invalid("echo", "`echo` is not supported"));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "`suffix` is not supported"));
    }
    let logprobs = plan::completion_logprobs(req.logprobs)?;
    let max_tokens = options.max_tokens.map(|v| ("max_tokens", v));
    let plan = Plan::new(&options, max_tokens, logprobs, None)?;
    let prompt = prompt::completion(&req.prompt)?;
    let shape = Shape {
        n: plan.n,
        logprobs: logprobs.is_some(),
        constrained: plan.constrained(),
        prompt_param: "prompt",
        tools: None,
    };
    Ok(Checked { plan, shape, input: Input::Prompt(prompt), media: Vec::new(), user: options.user })
}

/// A chat with tools: the model's own template renders messages and tools (llama.cpp's
/// `common/` pipeline) and each choice's sampler gets the tool-call grammar; the replies are
/// parsed into tool calls. Blocking.
pub fn render_tools(
    model: &Model,
    chat: &crate::tools::ChatRequest,
    samplers: Vec<Sampler>,
) -> Result<(RenderedChat, Vec<Sampler>), ApiError> {
    let templates = ChatTemplates::new(model).map_err(|e| ApiError::invalid("tools", e.to_string()))?;
    let rendered = chat.render(&templates).map_err(tools::render_error)?;
    let samplers = samplers
        .into_iter()
        .map(|s| rendered.sampler(model, s).map_err(tools::render_error))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((rendered, samplers))
}

/// `POST /v1/embeddings`'s body, checked.
#[derive(Debug)]
pub struct CheckedEmbeddings {
    /// The request as sent (its `input` taken out into `texts`).
    pub req: EmbeddingRequest,
    /// The texts to embed.
    pub texts: Vec<String>,
    /// `encoding_format: "base64"`.
    pub base64: bool,
    /// The request's `keep_alive`.
    pub keep_alive: Option<KeepAlive>,
}

/// `POST /v1/embeddings`'s body, checked.
pub fn embeddings(body: &[u8]) -> Result<CheckedEmbeddings, ApiError> {
    let mut req: EmbeddingRequest = body::parse(body)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("expected \"float\" or \"base64\", got {other:?}"),
            ))
        }
    };
    let keep_alive = plan::keep_alive(req.keep_alive.as_ref())?;
    let texts = match std::mem::replace(&mut req.input, PromptInput::Texts(Vec::new())) {
        PromptInput::Texts(texts) => texts,
        PromptInput::Tokens(_) => return Err(ApiError::invalid("input", "token ids are not accepted here: send text")),
    };
    if texts.is_empty() || texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::invalid("input", format!("send 1 to {MAX_EMBEDDING_INPUTS} texts, got {}", texts.len())));
    }
    Ok(CheckedEmbeddings { req, texts, base64, keep_alive })
}
