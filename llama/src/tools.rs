//! Tool calling and reasoning output (feature `tools`), through upstream llama.cpp's `common/`
//! chat pipeline.
//!
//! Every model family writes tool calls its own way (Hermes/Qwen `<tool_call>{…}</tool_call>`,
//! Llama 3.x JSON, Mistral `[TOOL_CALLS]`, Qwen3-Coder XML, GPT-OSS channels, …) and wraps its
//! reasoning in its own tags. llama.cpp's `common/` library knows them all, and for templates
//! it has never seen it derives the format by analysing the template. This module reaches it
//! through the C++ shim (exceptions caught, JSON strings across the boundary) and gives it Rust
//! types:
//!
//! 1. [`ChatTemplates::new`] parses the model's templates once.
//! 2. A [`ChatRequest`] — messages, [`Tool`]s, [`ToolChoice`], parallel calls, thinking — is
//!    [rendered](ChatRequest::render) by the model's own template into a [`RenderedChat`]: the
//!    prompt, the format, a grammar that keeps tool-call arguments valid (lazy under
//!    [`ToolChoice::Auto`]: free text stays free until a trigger such as `<tool_call>` appears),
//!    extra stop strings and an output parser.
//! 3. [`RenderedChat::sampler`] adds that grammar to any sampler chain; [`RenderedChat::request`]
//!    makes an [engine](crate::engine) request of it.
//! 4. [`ChatParser::parse`] turns the output into an assistant [`ChatMessage`]: content,
//!    reasoning content and [`ToolCall`]s; [`ToolCallStream`] does it incrementally and yields
//!    OpenAI-style deltas for streaming.
//!
//! ```no_run
//! use llama::tools::{ChatRequest, ChatTemplates, Tool, ToolChoice};
//! use llama::engine::{Engine, EngineParams};
//! use llama::{ChatMessage, GenerateParams, Model, Sampler};
//!
//! let model = Model::load("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")?;
//! let templates = ChatTemplates::new(&model)?;
//! let weather = Tool::new(
//!     "get_weather",
//!     "Current weather in a city",
//!     serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
//! );
//! let rendered = ChatRequest::new(vec![ChatMessage::user("Weather in Paris?")])
//!     .tools(vec![weather])
//!     .tool_choice(ToolChoice::Required)
//!     .render(&templates)?;
//! let sampler = rendered.sampler(&model, Sampler::chain().temp(0.7).dist(1))?;
//! let request = rendered.request(sampler, GenerateParams::default().max_tokens(128));
//! let engine = Engine::new(&model, EngineParams::default())?;
//! let (text, _finish) = engine.handle().submit(request)?.collect_text()?.remove(0);
//! let reply = rendered.parser()?.parse(&text);
//! for call in &reply.message.tool_calls {
//!     println!("{}({})", call.name, call.arguments);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Prompts are tokenized the way [`ChatTemplate::render_tokens`](crate::ChatTemplate::render_tokens)
//! does it: message contents never produce control tokens. Tool definitions and tool-call
//! arguments come from the application, not from end users, and are rendered as the template
//! writes them.

use std::ffi::{c_char, CStr, CString};
use std::ptr::NonNull;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::chat::{content_marker, tokenize_rendered};
use crate::engine::{Prompt, Request};
use crate::error::ChatError;
use crate::{
    AddSpecial, ChatMessage, ControlText, GenerateParams, Model, Sampler, SamplerBuildError, SpecialSyntax, Token,
    ToolCall, Vocab,
};

/// Why a tool-calling request could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolsError {
    /// llama.cpp's chat pipeline refused the templates or the request (a template it cannot
    /// render, a tool schema it cannot turn into a grammar, a malformed message, …); carries
    /// its reason.
    #[error("chat pipeline: {0}")]
    Pipeline(String),
    /// A string holds a NUL byte.
    #[error("chat text contains a NUL byte")]
    NulByte,
    /// A tool definition is unusable (empty or duplicate name, parameters not a JSON object).
    #[error("invalid tool: {0}")]
    InvalidTool(String),
    /// [`ToolChoice::Function`] names a function that is not among the tools.
    #[error("tool_choice names {0:?}, which is not among the tools")]
    UnknownFunction(String),
    /// The rendered prompt could not be tokenized with contents kept apart from the template.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// The grammar was refused by the sampler.
    #[error(transparent)]
    Sampler(#[from] SamplerBuildError),
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// The function's name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// A JSON Schema object for its arguments.
    pub parameters: Value,
}

impl Tool {
    /// A function tool.
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Tool {
        Tool { name: name.into(), description: description.into(), parameters }
    }

    fn to_openai(&self) -> Value {
        // The order clients send and templates were trained on (serde_json keeps it here).
        json!({
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        })
    }
}

/// Whether and which tools the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// Tools are described but never called; output is plain text.
    None,
    /// The model decides: free text, or a call once it starts one (the grammar is lazy).
    #[default]
    Auto,
    /// The model must call at least one tool: the grammar holds from the first token.
    Required,
    /// The model must call this function: only it is offered, and the grammar holds from the
    /// first token.
    Function(String),
}

/// How reasoning ("thinking") is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Reasoning {
    /// Extracted into [`ChatMessage::reasoning_content`], in streaming deltas too.
    #[default]
    Separate,
    /// Left in the content as the model wrote it.
    Inline,
}

impl Reasoning {
    fn name(self) -> &'static str {
        match self {
            Reasoning::Separate => "auto",
            Reasoning::Inline => "none",
        }
    }
}

/// A model's chat templates (default and tool-use variants), parsed once by llama.cpp's
/// `common/` library. `Send` and `Sync`: renders are serialized inside.
pub struct ChatTemplates {
    ptr: Mutex<NonNull<llama_sys::llama_rs_chat_templates>>,
    model: Model,
}

// SAFETY: the templates are heap state owned by this value with no thread affinity; every use
// goes through the mutex, so no two threads touch them at once.
unsafe impl Send for ChatTemplates {}
// SAFETY: as above: shared access is serialized by the mutex.
unsafe impl Sync for ChatTemplates {}

impl std::fmt::Debug for ChatTemplates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplates").finish_non_exhaustive()
    }
}

/// Runs a shim call that returns a heap JSON string (null when it threw) and parses it.
fn json_call(call: impl FnOnce() -> *mut c_char) -> Result<Value, ToolsError> {
    let p = crate::barrier::guarded(call).map_err(ToolsError::Pipeline)?;
    if p.is_null() {
        return Err(ToolsError::Pipeline("the chat pipeline failed without a message".into()));
    }
    // SAFETY: non-null results are NUL-terminated heap strings owned by us until freed below.
    let text = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    // SAFETY: `p` came from the shim's allocator and is freed once.
    unsafe { llama_sys::llama_rs_string_free(p) };
    serde_json::from_str(&text).map_err(|e| ToolsError::Pipeline(format!("unreadable pipeline output: {e}")))
}

impl ChatTemplates {
    /// The model's own templates.
    pub fn new(model: &Model) -> Result<ChatTemplates, ToolsError> {
        ChatTemplates::init(model, None)
    }

    /// Jinja `source` in place of the model's template (the model still supplies BOS/EOS).
    pub fn with_template(model: &Model, source: &str) -> Result<ChatTemplates, ToolsError> {
        ChatTemplates::init(model, Some(source))
    }

    fn init(model: &Model, source: Option<&str>) -> Result<ChatTemplates, ToolsError> {
        let source = source.map(CString::new).transpose().map_err(|_| ToolsError::NulByte)?;
        let src_ptr = source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        // SAFETY: the model is alive for the call (and kept alive by the result); the override
        // is null or NUL-terminated; the shim catches exceptions.
        let p = crate::barrier::guarded(|| unsafe { llama_sys::llama_rs_chat_templates_init(model.as_ptr(), src_ptr) })
            .map_err(ToolsError::Pipeline)?;
        let ptr = NonNull::new(p).ok_or_else(|| ToolsError::Pipeline("no usable chat template".into()))?;
        Ok(ChatTemplates { ptr: Mutex::new(ptr), model: model.clone() })
    }

    /// The model these templates belong to.
    pub fn model(&self) -> &Model {
        &self.model
    }

    fn apply(&self, request: &Value) -> Result<Value, ToolsError> {
        let request = CString::new(request.to_string()).map_err(|_| ToolsError::NulByte)?;
        // A panic while the lock was held cannot leave the templates half-changed (the shim
        // call does not unwind), so a poisoned lock is still usable.
        let guard = self.ptr.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: the templates are alive and used by this thread only (the lock); the request
        // is NUL-terminated; the shim catches exceptions.
        json_call(|| unsafe { llama_sys::llama_rs_chat_templates_apply(guard.as_ptr(), request.as_ptr()) })
    }
}

impl Drop for ChatTemplates {
    fn drop(&mut self) {
        let p = *self.ptr.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: owned by this value and freed once.
        unsafe { llama_sys::llama_rs_chat_templates_free(p.as_ptr()) };
    }
}

/// A conversation with tools, ready to be rendered by a model's templates.
///
/// ```
/// use llama::tools::{ChatRequest, Tool, ToolChoice};
/// let request = llama::tools::ChatRequest::new(vec![llama::ChatMessage::user("Weather in Oslo?")])
///     .tools(vec![Tool::new("get_weather", "Weather by city", serde_json::json!({"type": "object"}))])
///     .tool_choice(ToolChoice::Auto)
///     .parallel_tool_calls(false);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a request does nothing until rendered"]
pub struct ChatRequest {
    messages: Vec<ChatMessage>,
    tools: Vec<Tool>,
    tool_choice: ToolChoice,
    parallel_tool_calls: bool,
    add_generation_prompt: bool,
    enable_thinking: bool,
    reasoning: Reasoning,
    kwargs: serde_json::Map<String, Value>,
    now: Option<i64>,
}

impl ChatRequest {
    /// A request for the assistant's next turn after `messages`, with no tools.
    pub fn new(messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            messages,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: false,
            add_generation_prompt: true,
            enable_thinking: true,
            reasoning: Reasoning::Separate,
            kwargs: serde_json::Map::new(),
            now: None,
        }
    }

    /// The functions the model may call.
    pub fn tools(mut self, tools: Vec<Tool>) -> ChatRequest {
        self.tools = tools;
        self
    }

    /// Whether and which tools must be called (default [`ToolChoice::Auto`]).
    pub fn tool_choice(mut self, choice: ToolChoice) -> ChatRequest {
        self.tool_choice = choice;
        self
    }

    /// Allow several calls in one reply where the format has a way to write them (default off).
    pub fn parallel_tool_calls(mut self, yes: bool) -> ChatRequest {
        self.parallel_tool_calls = yes;
        self
    }

    /// Append the prefix that starts the assistant's reply (default on).
    pub fn add_generation_prompt(mut self, yes: bool) -> ChatRequest {
        self.add_generation_prompt = yes;
        self
    }

    /// Let a reasoning model think before answering, where its template has a switch (default on).
    pub fn enable_thinking(mut self, yes: bool) -> ChatRequest {
        self.enable_thinking = yes;
        self
    }

    /// How reasoning is returned (default [`Reasoning::Separate`]).
    pub fn reasoning(mut self, reasoning: Reasoning) -> ChatRequest {
        self.reasoning = reasoning;
        self
    }

    /// An extra variable for the template (e.g. a model-specific switch).
    pub fn template_kwarg(mut self, key: impl Into<String>, value: Value) -> ChatRequest {
        self.kwargs.insert(key.into(), value);
        self
    }

    /// The time templates that print a date see, as Unix seconds (default: now).
    pub fn now(mut self, unix_seconds: i64) -> ChatRequest {
        self.now = Some(unix_seconds);
        self
    }

    /// The request as the shim takes it; `content` replaces each message's content.
    fn to_json(&self, tools: &[Tool], choice: &str, content: impl Fn(usize, &ChatMessage) -> String) -> Value {
        let messages: Vec<Value> =
            self.messages.iter().enumerate().map(|(i, m)| message_json(m, content(i, m))).collect();
        let mut v = json!({
            "messages": messages,
            "tool_choice": choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "add_generation_prompt": self.add_generation_prompt,
            "enable_thinking": self.enable_thinking,
            "reasoning_format": self.reasoning.name(),
            "chat_template_kwargs": Value::Object(self.kwargs.clone()),
        });
        if !tools.is_empty() {
            v["tools"] = Value::Array(tools.iter().map(Tool::to_openai).collect());
        }
        if let Some(now) = self.now {
            v["now"] = json!(now);
        }
        v
    }

    /// Checks the tools and resolves the choice into the tools offered and common's choice.
    fn resolve_tools(&self) -> Result<(Vec<Tool>, &'static str), ToolsError> {
        for (i, t) in self.tools.iter().enumerate() {
            if t.name.is_empty() {
                return Err(ToolsError::InvalidTool(format!("tool {i} has an empty name")));
            }
            if self.tools[..i].iter().any(|u| u.name == t.name) {
                return Err(ToolsError::InvalidTool(format!("two tools are named {:?}", t.name)));
            }
            if !t.parameters.is_object() {
                return Err(ToolsError::InvalidTool(format!(
                    "the parameters of {:?} are not a JSON Schema object",
                    t.name
                )));
            }
        }
        Ok(match &self.tool_choice {
            ToolChoice::None => (self.tools.clone(), "none"),
            ToolChoice::Auto => (self.tools.clone(), "auto"),
            ToolChoice::Required => (self.tools.clone(), "required"),
            // common has no "this function" choice: offer only that one and require a call.
            ToolChoice::Function(name) => {
                let tool = self
                    .tools
                    .iter()
                    .find(|t| &t.name == name)
                    .ok_or_else(|| ToolsError::UnknownFunction(name.clone()))?;
                (vec![tool.clone()], "required")
            }
        })
    }

    /// Renders the request with `templates`: the prompt, its tokens, the grammar and the parser.
    pub fn render(&self, templates: &ChatTemplates) -> Result<RenderedChat, ToolsError> {
        let (tools, choice) = self.resolve_tools()?;
        let real = templates.apply(&self.to_json(&tools, choice, |_, m| m.content.clone()))?;
        // The same render with each content replaced by a marker shows where contents are, so
        // they can be tokenized as plain text. Empty contents stay empty: templates test them
        // (an assistant message that only calls tools), and they hold nothing to protect.
        let marked = templates.apply(&self.to_json(&tools, choice, |i, m| {
            if m.content.is_empty() {
                String::new()
            } else {
                content_marker(i)
            }
        }))?;
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let strings = |v: &Value, key: &str| -> Vec<String> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        // common lets a required call follow free text, and a small model may then never call
        // at all. So a required call is opened in the prompt with the format's trigger word
        // (what `auto` waits for, e.g. `<tool_call>\n`): constrained from the first token.
        let forced = if choice == "required" && !tools.is_empty() {
            let auto = templates.apply(&self.to_json(&tools, "auto", |_, m| m.content.clone()))?;
            auto.get("grammar_triggers")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|t| t.get("type").and_then(Value::as_str) == Some("word")))
                .and_then(|t| t.get("value").and_then(Value::as_str))
                .unwrap_or_default()
                .to_string()
        } else {
            String::new()
        };
        let prompt = text(&real, "prompt") + &forced;
        let generation_prompt = text(&real, "generation_prompt") + &forced;
        let contents: Vec<&str> = self.messages.iter().map(|m| m.content.as_str()).collect();
        let vocab = templates.model.vocab();
        let tokens = tokenize_rendered(&vocab, &(text(&marked, "prompt") + &forced), &prompt, &contents)?;
        let preserved = strings(&real, "preserved_tokens");
        let preserved_ids = single_tokens(&vocab, &preserved);
        let gbnf = text(&real, "grammar");
        let grammar = (!gbnf.is_empty()).then(|| {
            let triggers = real
                .get("grammar_triggers")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|t| trigger(t, &vocab, &preserved_ids)).collect())
                .unwrap_or_default();
            ToolGrammar { gbnf, lazy: real.get("grammar_lazy").and_then(Value::as_bool).unwrap_or(false), triggers }
        });
        Ok(RenderedChat {
            prompt,
            tokens,
            format: text(&real, "format"),
            grammar,
            preserved_tokens: preserved_ids,
            additional_stops: strings(&real, "additional_stops"),
            generation_prompt: generation_prompt.clone(),
            supports_thinking: real.get("supports_thinking").and_then(Value::as_bool).unwrap_or(false),
            parser_spec: json!({
                "format": real.get("format").cloned().unwrap_or(Value::Null),
                "generation_prompt": generation_prompt,
                "parser": text(&real, "parser"),
                "reasoning_format": self.reasoning.name(),
                "parse_tool_calls": choice != "none" && !tools.is_empty(),
            })
            .to_string(),
            tool_names: if choice == "none" { Vec::new() } else { tools.iter().map(|t| t.name.clone()).collect() },
        })
    }
}

/// A message in OpenAI's wire format, as common reads it.
fn message_json(m: &ChatMessage, content: String) -> Value {
    let mut v = json!({"role": m.role, "content": content});
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    if let Some(r) = &m.reasoning_content {
        v["reasoning_content"] = json!(r);
    }
    v
}

/// The tokens of those strings that are one token each (a format's markers).
fn single_tokens(vocab: &Vocab<'_>, texts: &[String]) -> Vec<Token> {
    texts
        .iter()
        .filter_map(|t| match vocab.tokenize_with(t, AddSpecial::No, SpecialSyntax::Tokens).ok()?.as_slice() {
            [one] => Some(*one),
            _ => None,
        })
        .collect()
}

/// A grammar trigger from the pipeline's JSON. A trigger word that is one preserved token
/// becomes a token trigger: the model emits it as that token, and matching the token is exact.
fn trigger(t: &Value, vocab: &Vocab<'_>, preserved: &[Token]) -> Option<GrammarTrigger> {
    let value = t.get("value")?.as_str()?.to_string();
    Some(match t.get("type")?.as_str()? {
        "token" => GrammarTrigger::Token(Token(i32::try_from(t.get("token")?.as_i64()?).ok()?)),
        "word" => match single_tokens(vocab, std::slice::from_ref(&value)).as_slice() {
            [one] if preserved.contains(one) => GrammarTrigger::Token(*one),
            _ => GrammarTrigger::Word(value),
        },
        "pattern" => GrammarTrigger::Pattern(value),
        "pattern_full" => GrammarTrigger::PatternFull(value),
        _ => return None,
    })
}

/// What makes a lazy grammar start constraining.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrammarTrigger {
    /// This token is sampled.
    Token(Token),
    /// This text appears in the output.
    Word(String),
    /// The output matches this regular expression somewhere (the grammar sees the text from
    /// its first group).
    Pattern(String),
    /// The whole output matches this regular expression.
    PatternFull(String),
}

impl GrammarTrigger {
    /// The regular expression llama.cpp's lazy grammar matches, or `None` for a token.
    fn pattern(&self) -> Option<String> {
        match self {
            GrammarTrigger::Token(_) => None,
            GrammarTrigger::Word(w) => Some(regex_escape(w)),
            GrammarTrigger::Pattern(p) => Some(p.clone()),
            GrammarTrigger::PatternFull(p) => {
                let start = if p.starts_with('^') { "" } else { "^" };
                let end = if p.ends_with('$') { "" } else { "$" };
                Some(format!("{start}{p}{end}"))
            }
        }
    }
}

/// `text` as a regular expression that matches it literally.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if ".^$|()*+?[]{}\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The grammar a rendered request's output must follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolGrammar {
    /// GBNF, root rule `root`.
    pub gbnf: String,
    /// Whether it waits for a [trigger](Self::triggers) (free text until then).
    pub lazy: bool,
    /// What starts a lazy grammar.
    pub triggers: Vec<GrammarTrigger>,
}

/// A request rendered by a model's templates: what to feed the model, how to constrain it and
/// how to read its output.
#[derive(Debug, Clone)]
pub struct RenderedChat {
    /// The prompt text, template markup included.
    pub prompt: String,
    /// The prompt as tokens: markup may be control tokens, message contents never are.
    pub tokens: Vec<Token>,
    /// The output format common detected (e.g. `peg-native`).
    pub format: String,
    /// The grammar for tool calls (none when no tool may be called, or the format needs none).
    pub grammar: Option<ToolGrammar>,
    /// Tokens of the format's markers (e.g. `<tool_call>`): generated text shows them even
    /// when the vocabulary marks them special.
    pub preserved_tokens: Vec<Token>,
    /// Stop strings the format adds.
    pub additional_stops: Vec<String>,
    /// The prefix that starts the assistant's reply (already in the prompt); for a required
    /// call it ends with the opening of the call.
    pub generation_prompt: String,
    /// Whether the template has a reasoning block.
    pub supports_thinking: bool,
    parser_spec: String,
    /// Functions the reply may call.
    tool_names: Vec<String>,
}

impl RenderedChat {
    /// `chain` with this request's grammar added (lazy with its triggers, or strict from the
    /// first token); `chain` unchanged when there is none. The chain must not hold a grammar.
    pub fn sampler(&self, model: &Model, chain: Sampler) -> Result<Sampler, ToolsError> {
        let Some(g) = &self.grammar else { return Ok(chain) };
        if g.lazy {
            let patterns: Vec<String> = g.triggers.iter().filter_map(GrammarTrigger::pattern).collect();
            let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let tokens: Vec<Token> = g
                .triggers
                .iter()
                .filter_map(|t| match t {
                    GrammarTrigger::Token(t) => Some(*t),
                    _ => None,
                })
                .collect();
            return Ok(chain.grammar_lazy(model, &g.gbnf, "root", &patterns, &tokens)?);
        }
        let mut sampler = chain.grammar(model, &g.gbnf, "root")?;
        // A strict grammar starts at the reply's prefix, which the prompt already holds: walk
        // the grammar past it. A tokenizer that puts a space before the first special token
        // has that token skipped, as the prefix text has no such space.
        let vocab = model.vocab();
        let prefix = vocab
            .tokenize_with(&self.generation_prompt, AddSpecial::No, SpecialSyntax::Tokens)
            .map_err(ChatError::Tokenize)?;
        let skip_first = prefix.first().is_some_and(|&t| {
            let piece = vocab.token_to_bytes(t, ControlText::Show).unwrap_or_default();
            piece.first().is_some_and(u8::is_ascii_whitespace)
                && !self.generation_prompt.starts_with(|c: char| c.is_ascii_whitespace())
        });
        sampler
            .prefill_grammar(&prefix[usize::from(skip_first)..])
            .map_err(|e| ToolsError::Pipeline(format!("the grammar does not accept the reply prefix: {e}")))?;
        Ok(sampler)
    }

    /// `params` with the format's stop strings added and its marker tokens shown in the output.
    pub fn generate_params(&self, params: GenerateParams) -> GenerateParams {
        let mut stops = params.stop.clone();
        stops.extend(self.additional_stops.iter().cloned());
        let mut shown = params.show_special.clone();
        shown.extend(self.preserved_tokens.iter().copied());
        params.stop(stops).show_special(shown)
    }

    /// An [engine](crate::engine) request for this prompt: its tokens, `sampler` (build it with
    /// [`sampler`](Self::sampler)) and [`generate_params`](Self::generate_params)`(params)`.
    pub fn request(&self, sampler: Sampler, params: GenerateParams) -> Request {
        Request::new(Prompt::Tokens(self.tokens.clone())).sampler(sampler).params(self.generate_params(params))
    }

    /// A parser for this request's output.
    pub fn parser(&self) -> Result<ChatParser, ToolsError> {
        let spec = CString::new(self.parser_spec.as_str()).map_err(|_| ToolsError::NulByte)?;
        // SAFETY: the spec is NUL-terminated; the shim catches exceptions.
        let p = crate::barrier::guarded(|| unsafe { llama_sys::llama_rs_chat_parser_init(spec.as_ptr()) })
            .map_err(ToolsError::Pipeline)?;
        let ptr = NonNull::new(p).ok_or_else(|| ToolsError::Pipeline("the parser could not be built".into()))?;
        Ok(ChatParser { ptr, tool_names: self.tool_names.clone() })
    }
}

/// Reads a model's output in its format: content, reasoning and tool calls.
pub struct ChatParser {
    ptr: NonNull<llama_sys::llama_rs_chat_parser>,
    tool_names: Vec<String>,
}

// SAFETY: the parser is heap state owned by this value with no thread affinity; parsing only
// reads it. Not `Sync` to keep the promise small.
unsafe impl Send for ChatParser {}

impl std::fmt::Debug for ChatParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatParser").finish_non_exhaustive()
    }
}

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The assistant message: content, reasoning content and tool calls (ids filled in).
    pub message: ChatMessage,
    /// Why the output did not follow the format, when it did not; the whole output is then
    /// the content and there are no tool calls.
    pub malformed: Option<String>,
}

impl ChatParser {
    /// Parses a finished reply. Output that does not follow the format (possible under
    /// [`ToolChoice::Auto`] before a trigger, or a call cut short by the token limit) is
    /// returned as content, never an error: a tool call counts only if its arguments are a
    /// complete JSON value.
    pub fn parse(&self, text: &str) -> Parsed {
        let mut ids = IdCache::default();
        let checked = self.run(text, false).and_then(|message| {
            // common's parser is lenient and returns a call whose arguments were cut short.
            for (i, call) in message.tool_calls.iter().enumerate() {
                serde_json::from_str::<Value>(&call.arguments)
                    .map_err(|e| format!("the arguments of tool call {i} ({:?}) are not JSON: {e}", call.name))?;
            }
            Ok(message)
        });
        match checked {
            Ok(mut message) => {
                if message.tool_calls.is_empty() && message.reasoning_content.is_none() {
                    message.tool_calls = self.bare_calls(&message.content).unwrap_or_default();
                    if !message.tool_calls.is_empty() {
                        message.content.clear();
                    }
                }
                ids.assign(&mut message.tool_calls);
                Parsed { message, malformed: None }
            }
            Err(why) => Parsed { message: ChatMessage::assistant(text), malformed: Some(why) },
        }
    }

    /// Calls written as bare JSON instead of in the format's markup: the whole content one
    /// `{"name": ..., "arguments": {...}}` object (or an array of them), optionally in a
    /// ```json fence, naming offered functions. Small models trained on such formats often
    /// drop the markup (Qwen2.5-Coder-0.5B writes its calls this way without `<tool_call>`);
    /// anything else stays content.
    fn bare_calls(&self, content: &str) -> Option<Vec<ToolCall>> {
        let body = content.trim();
        let body = body
            .strip_prefix("```json")
            .or_else(|| body.strip_prefix("```"))
            .and_then(|b| b.strip_suffix("```"))
            .unwrap_or(body)
            .trim();
        if !body.starts_with(['{', '[']) || self.tool_names.is_empty() {
            return None;
        }
        let calls = match serde_json::from_str::<Value>(body).ok()? {
            Value::Array(items) => items,
            one @ Value::Object(_) => vec![one],
            _ => return None,
        };
        calls
            .iter()
            .map(|c| {
                let name = c.get("name")?.as_str()?;
                let args = c.get("arguments").or_else(|| c.get("parameters"))?;
                let arguments = match args {
                    Value::Object(_) => args.to_string(),
                    Value::String(s) if serde_json::from_str::<Value>(s).is_ok_and(|v| v.is_object()) => s.clone(),
                    _ => return None,
                };
                self.tool_names.iter().any(|n| n == name).then(|| ToolCall {
                    id: String::new(),
                    name: name.to_string(),
                    arguments,
                })
            })
            .collect::<Option<Vec<_>>>()
            .filter(|c| !c.is_empty())
    }

    /// Parses a reply that may still continue: what can be said so far (a tool call's
    /// arguments may be cut short). `None` when nothing can be said yet.
    pub fn parse_partial(&self, text: &str) -> Option<ChatMessage> {
        self.run(text, true).ok()
    }

    fn run(&self, text: &str, partial: bool) -> Result<ChatMessage, String> {
        // SAFETY: the parser is alive; `text` is valid for `len` bytes during the call; the
        // shim catches exceptions.
        let v = json_call(|| unsafe {
            llama_sys::llama_rs_chat_parse(self.ptr.as_ptr(), text.as_ptr().cast(), text.len(), partial)
        })
        .map_err(|e| e.to_string())?;
        Ok(parsed_message(&v))
    }
}

impl Drop for ChatParser {
    fn drop(&mut self) {
        // SAFETY: owned by this value and freed once.
        unsafe { llama_sys::llama_rs_chat_parser_free(self.ptr.as_ptr()) };
    }
}

/// An assistant message from common's OpenAI-style JSON.
fn parsed_message(v: &Value) -> ChatMessage {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let calls = v
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| {
                    let f = c.get("function").cloned().unwrap_or(Value::Null);
                    ToolCall {
                        id: text(c, "id").unwrap_or_default(),
                        name: text(&f, "name").unwrap_or_default(),
                        arguments: text(&f, "arguments").unwrap_or_default(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    ChatMessage {
        tool_calls: calls,
        reasoning_content: text(v, "reasoning_content").filter(|r| !r.is_empty()),
        ..ChatMessage::assistant(text(v, "content").unwrap_or_default())
    }
}

/// Ids for tool calls the model wrote without one, stable across partial parses.
#[derive(Debug, Default)]
struct IdCache(Vec<String>);

impl IdCache {
    fn assign(&mut self, calls: &mut [ToolCall]) {
        for (i, call) in calls.iter_mut().enumerate() {
            if self.0.len() <= i {
                self.0.push(if call.id.is_empty() { new_call_id() } else { call.id.clone() });
            }
            call.id = self.0[i].clone();
        }
    }
}

/// A fresh id in OpenAI's style (`call_` and 24 alphanumerics), unique per process run.
fn new_call_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded randomly per process; the counter keeps ids of one run distinct.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut n = (u128::from(h.finish()) << 64) | u128::from(COUNTER.load(Ordering::Relaxed));
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut id = String::from("call_");
    for _ in 0..24 {
        id.push(char::from(ALPHABET[(n % 62) as usize]));
        n /= 62;
    }
    id
}

/// A piece of a streamed reply, in the order OpenAI streams them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChatDelta {
    /// More reasoning text.
    Reasoning(String),
    /// More content text.
    Content(String),
    /// Tool call `index` begins: its id and function name (arguments follow).
    ToolCallStart {
        /// Position of the call in the reply.
        index: usize,
        /// The call's id.
        id: String,
        /// The function's name.
        name: String,
    },
    /// More of tool call `index`'s arguments (a fragment of JSON text).
    ToolCallArguments {
        /// Position of the call in the reply.
        index: usize,
        /// The fragment.
        fragment: String,
    },
}

/// Incremental parsing for streaming: feed generated text, get [`ChatDelta`]s. Only what can
/// no longer change is sent, so the deltas concatenate to the final parse.
#[derive(Debug)]
pub struct ToolCallStream {
    parser: ChatParser,
    text: String,
    sent: ChatMessage,
    ids: IdCache,
}

impl ToolCallStream {
    /// A stream over `parser` (from [`RenderedChat::parser`]).
    pub fn new(parser: ChatParser) -> ToolCallStream {
        ToolCallStream { parser, text: String::new(), sent: ChatMessage::assistant(""), ids: IdCache::default() }
    }

    /// Adds generated text; returns what can now be sent.
    pub fn push(&mut self, text: &str) -> Vec<ChatDelta> {
        self.text.push_str(text);
        match self.parser.parse_partial(&self.text) {
            Some(mut msg) => {
                self.ids.assign(&mut msg.tool_calls);
                self.diff(&msg, false)
            }
            None => Vec::new(),
        }
    }

    /// Ends the stream: the final parse and the deltas not sent yet. Output that did not
    /// follow the format comes back as content (the part not already sent as content).
    pub fn finish(mut self) -> (Parsed, Vec<ChatDelta>) {
        let mut parsed = self.parser.parse(&self.text);
        if parsed.malformed.is_none() {
            self.ids.assign(&mut parsed.message.tool_calls);
        }
        let deltas = self.diff(&parsed.message, true);
        (parsed, deltas)
    }

    /// What `now` adds to what was sent. Text that a later parse rewrote (rare: a partial
    /// parse that guessed differently) cannot be taken back; only growth is sent.
    fn diff(&mut self, now: &ChatMessage, last: bool) -> Vec<ChatDelta> {
        let mut out = Vec::new();
        let grow = |sent: &mut String, now: &str| -> Option<String> {
            let more = now.strip_prefix(sent.as_str()).filter(|m| !m.is_empty())?.to_string();
            sent.push_str(&more);
            Some(more)
        };
        let reasoning = now.reasoning_content.as_deref().unwrap_or_default();
        let sent_reasoning = self.sent.reasoning_content.get_or_insert_with(String::new);
        if let Some(more) = grow(sent_reasoning, reasoning) {
            out.push(ChatDelta::Reasoning(more));
        }
        // Content that may turn out to be a bare JSON call (see `ChatParser::bare_calls`) is
        // held back until the end, where the final parse decides.
        let maybe_call = !self.parser.tool_names.is_empty()
            && self.sent.content.is_empty()
            && now.content.trim_start().starts_with(['{', '[', '`']);
        if !maybe_call || last {
            if let Some(more) = grow(&mut self.sent.content, &now.content) {
                out.push(ChatDelta::Content(more));
            }
        }
        for (index, call) in now.tool_calls.iter().enumerate() {
            if call.name.is_empty() {
                break;
            }
            if index >= self.sent.tool_calls.len() {
                self.sent.tool_calls.push(ToolCall {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: String::new(),
                });
                out.push(ChatDelta::ToolCallStart { index, id: call.id.clone(), name: call.name.clone() });
            }
            if let Some(fragment) = grow(&mut self.sent.tool_calls[index].arguments, &call.arguments) {
                out.push(ChatDelta::ToolCallArguments { index, fragment });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_words_are_escaped_and_full_patterns_anchored() {
        assert_eq!(GrammarTrigger::Word("<tool_call>(x)".into()).pattern().unwrap(), "<tool_call>\\(x\\)");
        assert_eq!(GrammarTrigger::PatternFull("a.*".into()).pattern().unwrap(), "^a.*$");
        assert_eq!(GrammarTrigger::PatternFull("^a$".into()).pattern().unwrap(), "^a$");
        assert_eq!(GrammarTrigger::Token(Token(3)).pattern(), None);
    }

    #[test]
    fn call_ids_are_openai_shaped_and_distinct() {
        let (a, b) = (new_call_id(), new_call_id());
        assert!(a.starts_with("call_") && a.len() == 29 && a[5..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn named_function_must_exist_and_tools_must_be_objects() {
        let t = Tool::new("f", "", json!({"type": "object"}));
        let req = ChatRequest::new(vec![]).tools(vec![t.clone()]).tool_choice(ToolChoice::Function("g".into()));
        assert!(matches!(req.resolve_tools(), Err(ToolsError::UnknownFunction(n)) if n == "g"));
        let req = ChatRequest::new(vec![]).tools(vec![t.clone(), t.clone()]);
        assert!(matches!(req.resolve_tools(), Err(ToolsError::InvalidTool(_))));
        let req = ChatRequest::new(vec![]).tools(vec![Tool::new("f", "", json!(3))]);
        assert!(matches!(req.resolve_tools(), Err(ToolsError::InvalidTool(_))));
        let req = ChatRequest::new(vec![])
            .tools(vec![t, Tool::new("g", "", json!({}))])
            .tool_choice(ToolChoice::Function("g".into()));
        let (tools, choice) = req.resolve_tools().unwrap();
        assert_eq!((tools.len(), tools[0].name.as_str(), choice), (1, "g", "required"));
    }
}
