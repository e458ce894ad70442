//! Chat templates: turning a conversation into the prompt format a model was trained on.

use std::ffi::CString;

use crate::error::ChatError;
use crate::{AddSpecial, ControlText, Model, SpecialSyntax, Token, Vocab};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The message text.
    pub content: String,
    /// Calls an `assistant` message made (empty for every other message).
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the id of the [`ToolCall`] it answers.
    pub tool_call_id: Option<String>,
    /// What a reasoning model thought before answering, kept out of `content`.
    pub reasoning_content: Option<String>,
}

/// A function call requested by the model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCall {
    /// Identifies the call; a tool message answering it carries the same id.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments as JSON text (an object, as the function's schema describes).
    pub arguments: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into(), ..ChatMessage::default() }
    }

    /// An assistant message that calls tools (with optional text before the calls).
    pub fn assistant_tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        ChatMessage { tool_calls: calls, ..ChatMessage::assistant(content) }
    }

    /// The result of the tool call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { tool_call_id: Some(call_id.into()), ..ChatMessage::tool(content) }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage::new("system", content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage::new("user", content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage::new("assistant", content)
    }

    /// A tool result message.
    pub fn tool(content: impl Into<String>) -> Self {
        ChatMessage::new("tool", content)
    }
}

/// Names of the templates llama.cpp's built-in renderer knows (e.g. `chatml`, `gemma`,
/// `llama3`), usable with [`apply_builtin_template`].
pub fn builtin_templates() -> Vec<String> {
    // SAFETY: with a null output and length 0 the call only returns the count.
    let n = unsafe { llama_sys::llama_chat_builtin_templates(std::ptr::null_mut(), 0) };
    let mut names = vec![std::ptr::null(); usize::try_from(n).unwrap_or(0)];
    // SAFETY: `names` has room for `n` pointers to static strings.
    unsafe { llama_sys::llama_chat_builtin_templates(names.as_mut_ptr(), names.len()) };
    // SAFETY: each entry is a static NUL-terminated string.
    names.into_iter().map(|p| unsafe { crate::backend::cstr_or_empty(p) }).collect()
}

/// Renders `messages` with llama.cpp's built-in renderer. `template` is a built-in name
/// (see [`builtin_templates`]) or a Jinja source that llama.cpp recognises by its markers;
/// `add_assistant` appends the prefix that starts the assistant's reply.
pub fn apply_builtin_template(
    template: &str,
    messages: &[ChatMessage],
    add_assistant: bool,
) -> Result<String, ChatError> {
    let template = CString::new(template).map_err(|_| ChatError::NulByte)?;
    let owned: Vec<(CString, CString)> = messages
        .iter()
        .map(|m| Ok((CString::new(m.role.as_str())?, CString::new(m.content.as_str())?)))
        .collect::<Result<_, std::ffi::NulError>>()
        .map_err(|_| ChatError::NulByte)?;
    let chat: Vec<llama_sys::llama_chat_message> = owned
        .iter()
        .map(|(role, content)| llama_sys::llama_chat_message { role: role.as_ptr(), content: content.as_ptr() })
        .collect();
    let total: usize = messages.iter().map(|m| m.role.len() + m.content.len()).sum();
    let mut buf = vec![0u8; 2 * total + 256];
    loop {
        let cap = i32::try_from(buf.len()).map_err(|_| ChatError::Unsupported)?;
        // SAFETY: template and messages are NUL-terminated strings kept alive by `owned` and
        // `template`; the buffer has `cap` writable bytes.
        let n = crate::barrier::guarded(|| unsafe {
            llama_sys::llama_rs_chat_apply_template(
                template.as_ptr(),
                chat.as_ptr(),
                chat.len(),
                add_assistant,
                buf.as_mut_ptr().cast(),
                cap,
            )
        })
        .map_err(ChatError::Render)?;
        let n = usize::try_from(n).map_err(|_| ChatError::Unsupported)?;
        if n <= buf.len() {
            buf.truncate(n);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        buf.resize(n, 0);
    }
}

impl Model {
    /// Renders `messages` with the model's chat template using llama.cpp's built-in renderer
    /// (which recognises the common template families); `add_assistant` appends the prefix
    /// that starts the assistant's reply.
    ///
    /// The result contains the template's special-token text: tokenize it with
    /// `SpecialSyntax::Tokens`, or use [`ChatTemplate::render_tokens`] so message contents stay
    /// plain text.
    ///
    /// ```no_run
    /// use llama::{ChatMessage, Model};
    /// let model = Model::load("model.gguf")?;
    /// let prompt = model.apply_chat_template(&[ChatMessage::user("Hi!")], true)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_assistant: bool) -> Result<String, ChatError> {
        let template = self.chat_template().ok_or(ChatError::NoTemplate)?;
        apply_builtin_template(&template, messages, add_assistant)
    }
}

/// Instructions one render may run: enough for conversations of thousands of messages with
/// real templates (tested with SmolLM2's), and a hostile template stops within a
/// fraction of a second. 10 million let a doubly recursive macro run 0.7 s per render (release),
/// three renders per request (`render_tokens`), ~60 s under the fuzzer's ASan build.
#[cfg(feature = "jinja")]
const RENDER_FUEL: u64 = 2_000_000;

/// A model's full Jinja chat template, rendered in Rust with minijinja (feature `jinja`).
///
/// It is one of three ways the crate renders a conversation; which renders what:
///
/// | path | renders | why |
/// |---|---|---|
/// | [`apply_builtin_template`], [`Model::apply_chat_template`] | role + content | llama.cpp's C renderer: no Jinja, only the template families it hard-codes, no tools |
/// | [`ChatTemplate`] (feature `jinja`) | role + content | the model's own template in minijinja, in Rust: any template, plain chat; what the engine's [`Prompt::Chat`](crate::engine::Prompt::Chat) uses |
/// | [`tools::ChatTemplates`](crate::tools::ChatTemplates) (feature `tools`) | role, content, tool calls, tool results, tool definitions, reasoning | upstream's `common/` pipeline through the C++ shim: it knows each family's tool-call format and builds the grammar and the output parser to match |
///
/// Tool calls and results on a [`ChatMessage`] are only rendered by the third path; the other
/// two see role and content.
///
/// ```no_run
/// use llama::{ChatMessage, ChatTemplate, Model};
/// let model = Model::load("model.gguf")?;
/// let template = ChatTemplate::from_model(&model)?;
/// let prompt = template.render(&[ChatMessage::user("Hi!")], true)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "jinja")]
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos: String,
    eos: String,
}

#[cfg(feature = "jinja")]
impl ChatTemplate {
    /// The model's default template, with its BOS/EOS token texts.
    pub fn from_model(model: &Model) -> Result<Self, ChatError> {
        let source = model.chat_template().ok_or(ChatError::NoTemplate)?;
        let vocab = model.vocab();
        let text = |t: Option<Token>| t.and_then(|t| vocab.token_to_bytes(t, ControlText::Show).ok());
        let text = |t| String::from_utf8_lossy(&text(t).unwrap_or_default()).into_owned();
        Ok(ChatTemplate { source, bos: text(vocab.bos()), eos: text(vocab.eos()) })
    }

    /// A template from Jinja source, with the `bos_token`/`eos_token` it may reference.
    pub fn new(source: impl Into<String>, bos: impl Into<String>, eos: impl Into<String>) -> Self {
        ChatTemplate { source: source.into(), bos: bos.into(), eos: eos.into() }
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the conversation; `add_generation_prompt` appends the assistant prefix.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ChatError> {
        use minijinja::{context, Environment, Error, ErrorKind, Value};
        let mut env = Environment::new();
        // Templates come with model files: without a budget, two nested loops over large ranges
        // keep a thread busy for hours.
        env.set_fuel(Some(RENDER_FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |_fmt: String| -> String { String::new() });
        let tmpl = env.template_from_str(&self.source).map_err(|e| ChatError::Render(e.to_string()))?;
        let messages: Vec<Value> =
            messages.iter().map(|m| context! { role => m.role.as_str(), content => m.content.as_str() }).collect();
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        })
        .map_err(|e| ChatError::Render(e.to_string()))
    }

    /// [`render`](Self::render)'s text split into the template's own text
    /// ([`SpecialSyntax::Tokens`]) and the messages' contents ([`SpecialSyntax::Text`]), as
    /// [`render_tokens`](Self::render_tokens) tokenizes them.
    pub(crate) fn render_pieces(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<(String, SpecialSyntax)>, ChatError> {
        let marked: Vec<ChatMessage> =
            messages.iter().enumerate().map(|(i, m)| ChatMessage::new(m.role.clone(), content_marker(i))).collect();
        let marked = self.render(&marked, add_generation_prompt)?;
        let real = self.render(messages, add_generation_prompt)?;
        let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
        let pieces = rendered_pieces(&marked, &real, &contents)?;
        Ok(pieces.into_iter().map(|(text, syntax)| (text.to_string(), syntax)).collect())
    }

    /// Renders and tokenizes the conversation so that the template's own text may produce
    /// control tokens while message contents never do (a user typing `<|im_end|>` gets plain
    /// text, not an end-of-turn token). BOS is prepended when the model wants it and the
    /// template did not write it.
    pub fn render_tokens(
        &self,
        vocab: &Vocab<'_>,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<Token>, ChatError> {
        let pieces = self.render_pieces(messages, add_generation_prompt)?;
        tokenize_pieces(vocab, pieces.iter().map(|(text, syntax)| (text.as_str(), *syntax)))
    }
}

#[cfg(any(feature = "jinja", feature = "tools"))]
/// What stands in for message `i`'s content in a marked rendering (private-use characters no
/// template writes).
pub(crate) fn content_marker(i: usize) -> String {
    format!("\u{E000}{i}\u{E001}")
}

#[cfg(any(feature = "jinja", feature = "tools"))]
/// Tokenizes `real`, a template's rendering of messages whose contents are `contents`, so that
/// the template's own text may produce control tokens while contents never do (a user typing
/// `<|im_end|>` gets plain text, not an end-of-turn token). `marked` is the same rendering with
/// each content replaced by its [`content_marker`]. BOS is prepended when the model wants it
/// and the template did not write it.
pub(crate) fn tokenize_rendered(
    vocab: &Vocab<'_>,
    marked: &str,
    real: &str,
    contents: &[&str],
) -> Result<Vec<Token>, ChatError> {
    tokenize_pieces(vocab, rendered_pieces(marked, real, contents)?)
}

#[cfg(any(feature = "jinja", feature = "tools"))]
/// Tokenizes rendered pieces each with its syntax; BOS prepended when the model wants it and
/// the template did not write it.
fn tokenize_pieces<'a>(
    vocab: &Vocab<'_>,
    pieces: impl IntoIterator<Item = (&'a str, SpecialSyntax)>,
) -> Result<Vec<Token>, ChatError> {
    let mut tokens = Vec::new();
    for (text, syntax) in pieces {
        tokens.extend(vocab.tokenize_with(text, AddSpecial::No, syntax).map_err(ChatError::Tokenize)?);
    }
    if let Some(bos) = vocab.bos().filter(|_| vocab.adds_bos()) {
        if tokens.first() != Some(&bos) {
            tokens.insert(0, bos);
        }
    }
    Ok(tokens)
}

#[cfg(any(feature = "jinja", feature = "tools"))]
/// [`tokenize_rendered`]'s split of `real` into the template's own text
/// ([`SpecialSyntax::Tokens`]) and the contents ([`SpecialSyntax::Text`]), in order: for callers
/// that tokenize the pieces their own way (with media, through a projector).
pub(crate) fn rendered_pieces<'a>(
    marked: &'a str,
    real: &str,
    contents: &[&'a str],
) -> Result<Vec<(&'a str, SpecialSyntax)>, ChatError> {
    let mut segments = Vec::new(); // (template text before, content index)
    let mut rest = marked;
    while let Some(start) = rest.find('\u{E000}') {
        let end = rest[start..].find('\u{E001}').map(|e| start + e).ok_or(ChatError::Unsupported)?;
        let index: usize = rest[start + 3..end].parse().map_err(|_| ChatError::Unsupported)?;
        contents.get(index).ok_or(ChatError::Unsupported)?;
        segments.push((&rest[..start], index));
        rest = &rest[end + 3..];
    }
    // Templates may transform contents (commonly `| trim`): find the form that reproduces
    // the real rendering, or refuse rather than tokenize something else.
    let forms: [fn(&str) -> &str; 2] = [|c| c, str::trim];
    let form = forms
        .into_iter()
        .find(|f| {
            let mut s: String = segments.iter().map(|(t, i)| format!("{t}{}", f(contents[*i]))).collect();
            s.push_str(rest);
            s == real
        })
        .ok_or(ChatError::Unsupported)?;
    let mut pieces = Vec::with_capacity(2 * segments.len() + 1);
    for (text, index) in segments {
        pieces.push((text, SpecialSyntax::Tokens));
        pieces.push((form(contents[index]), SpecialSyntax::Text));
    }
    pieces.push((rest, SpecialSyntax::Tokens));
    Ok(pieces)
}
