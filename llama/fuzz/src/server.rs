//! `llama::server`'s request checking on arbitrary bodies: `check::chat`, `check::completion`
//! and `check::embeddings`, then for what passes the samplers
//! and, for chats with tools, the rendering through the model's template and the tool-call
//! grammar. Everything a body can reach before the engine; any of it may refuse, none may
//! panic or abort. The first byte picks the endpoint. Compiled into the fuzz crate and into
//! `llama/tests/fuzz_replay.rs`, which replays the seeds.

use llama::Model;

use llama::server::check::{self, Input};

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
        0 => check::chat(body),
        1 => check::completion(body),
        _ => return if check::embeddings(body).is_ok() { Reached::Checked } else { Reached::Refused },
    };
    let Ok(checked) = checked else { return Reached::Refused };
    let Ok((samplers, _)) = checked.plan.build(model, 2048) else { return Reached::Checked };
    match &checked.input {
        Input::Tools(chat) if check::render_tools(model, chat, samplers).is_ok() => Reached::Rendered,
        _ => Reached::Sampled,
    }
}
