//! `llama::server`'s request checking on arbitrary bodies: `check::chat`, `check::completion`,
//! `check::embeddings`, `responses::check`, `anthropic::check`, and `ollama::check` and
//! `check_generate`, then for what passes the samplers
//! and, for chats with tools, the rendering through the model's template and the tool-call
//! grammar. Everything a body can reach before the engine; any of it may refuse, none may
//! panic or abort. The first byte picks the endpoint. Compiled into the fuzz crate and into
//! `llama/tests/fuzz_replay.rs`, which replays the seeds.

use llama::Model;

use llama::server::check::{self, Checked, Input};
use llama::server::ApiError;
use llama::server::{anthropic, ollama, responses};

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
    // Ollama's "nothing to generate" (a model load) is as far as such a body goes.
    let load = |r: Result<Option<Checked>, ApiError>| r.and_then(|c| c.ok_or_else(|| ApiError::bad_request("a load")));
    let checked = match endpoint % 7 {
        0 => check::chat(body),
        1 => check::completion(body),
        2 => return if check::embeddings(body).is_ok() { Reached::Checked } else { Reached::Refused },
        3 => responses::check(body),
        4 => anthropic::check(body),
        5 => load(ollama::check(body)),
        _ => load(ollama::check_generate(body)),
    };
    let Ok(checked) = checked else { return Reached::Refused };
    let Ok((samplers, _)) = checked.plan.build(model, 2048) else { return Reached::Checked };
    match &checked.input {
        Input::Tools(chat) if check::render_tools(model, chat, samplers).is_ok() => Reached::Rendered,
        _ => Reached::Sampled,
    }
}
