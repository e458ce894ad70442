//! The server example's request checking on arbitrary bodies (`examples/server/routes.rs`):
//! `check_chat`, `check_completion` and `check_embeddings`, then for what passes the samplers
//! and, for chats with tools, the rendering through the model's template and the tool-call
//! grammar. Everything a body can reach before the engine; any of it may refuse, none may
//! panic or abort. The first byte picks the endpoint. Compiled at the crate root of both the
//! fuzz crate and the server's routes test, next to the server's own modules.

use llama::Model;

use crate::routes::{self, Input};

/// How far a body got: what the replay test checks its seeds against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reached {
    Refused,
    Checked,
    Sampled,
    Rendered,
}

pub fn request(model: &Model, data: &[u8]) -> Reached {
    let Some((&endpoint, body)) = data.split_first() else { return Reached::Refused };
    let checked = match endpoint % 3 {
        0 => routes::check_chat(body),
        1 => routes::check_completion(body),
        _ => return if routes::check_embeddings(body).is_ok() { Reached::Checked } else { Reached::Refused },
    };
    let Ok(checked) = checked else { return Reached::Refused };
    let Ok((samplers, _)) = checked.plan.build(model, 2048) else { return Reached::Checked };
    match &checked.input {
        Input::Tools(chat) if routes::render_tools(model, chat, samplers).is_ok() => Reached::Rendered,
        _ => Reached::Sampled,
    }
}
