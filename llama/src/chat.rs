//! Chat templates: turning a conversation into the prompt format a model was trained on.

use std::ffi::CString;

use crate::error::ChatError;
use crate::Model;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

impl Model {
    /// Renders `messages` with the model's own chat template using llama.cpp's built-in
    /// renderer; `add_assistant` appends the prefix that starts the assistant's reply.
    ///
    /// The result contains the template's special-token text: tokenize it with
    /// `parse_special = true` ([`Vocab::tokenize_with`](crate::Vocab::tokenize_with)).
    ///
    /// ```no_run
    /// use llama::{ChatMessage, Model};
    /// let model = Model::load("model.gguf")?;
    /// let prompt = model.apply_chat_template(&[ChatMessage::new("user", "Hi!")], true)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_assistant: bool) -> Result<String, ChatError> {
        let template = self.chat_template().ok_or(ChatError::NoTemplate)?;
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
            // SAFETY: template and messages are NUL-terminated strings kept alive by `owned`
            // and `template`; the buffer has `cap` writable bytes.
            let n = unsafe {
                llama_sys::llama_chat_apply_template(
                    template.as_ptr(),
                    chat.as_ptr(),
                    chat.len(),
                    add_assistant,
                    buf.as_mut_ptr().cast(),
                    cap,
                )
            };
            let n = usize::try_from(n).map_err(|_| ChatError::Unsupported)?;
            if n <= buf.len() {
                buf.truncate(n);
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.resize(n, 0);
        }
    }
}
