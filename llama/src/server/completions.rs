//! OpenAI's chat and text completions answered: one JSON body, or an SSE stream of chunks
//! ending in `data: [DONE]`.

use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::tools::ChatDelta;

use crate::server::error::ApiError;
use crate::server::framing;
use crate::server::generation::{frames, new_id, unix_now, Counts, Encode, Finish, Generation, Reply};
use crate::server::openai::{
    AssistantMessage, ChatChoice, ChatChunk, ChatCompletion, ChatLogprobs, ChunkChoice, Delta, TextChoice,
    TextCompletion, TextLogprobs, TokenLogprob, Usage,
};
use crate::server::tools;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Text,
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::EndOfTurn | Finish::StopSequence => "stop",
        Finish::Length | Finish::ContextFull => "length",
        Finish::ToolCalls => "tool_calls",
    }
}

fn usage(c: Counts) -> Usage {
    Usage::new(c.prompt_tokens, c.cached_tokens, c.completion_tokens)
}

/// Appends a token's entry to legacy-format log-probabilities, `offset` being where its text
/// starts.
fn text_logprob(entry: TokenLogprob, offset: usize, into: &mut TextLogprobs) {
    into.tokens.push(entry.token);
    into.token_logprobs.push(entry.logprob);
    into.top_logprobs.push(entry.top_logprobs.into_iter().flatten().map(|t| (t.token, t.logprob)).collect());
    into.text_offset.push(offset);
}

/// Runs `g` to the end and answers with one JSON body.
pub async fn respond(g: Generation, api: Api, logprobs: bool) -> Result<Response, ApiError> {
    let done = g.collect().await?;
    let (id, created, model) = (new_id(if api == Api::Chat { "chatcmpl-" } else { "cmpl-" }), unix_now(), done.model);
    let body = match api {
        Api::Chat => Json(ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model,
            choices: done
                .choices
                .into_iter()
                .enumerate()
                .map(|(index, c)| {
                    let tool_calls = tools::calls_out(&c.calls);
                    ChatChoice {
                        index,
                        message: AssistantMessage {
                            role: "assistant",
                            // `null` when the reply is only tool calls.
                            content: (!c.content.is_empty() || tool_calls.is_none()).then_some(c.content),
                            refusal: None,
                            reasoning_content: c.reasoning,
                            tool_calls,
                        },
                        logprobs: logprobs.then(|| ChatLogprobs {
                            content: c.logprobs.into_iter().map(|(_, lp)| lp).collect(),
                            refusal: None,
                        }),
                        finish_reason: c.finish.map(finish_reason),
                    }
                })
                .collect(),
            usage: usage(done.counts),
            system_fingerprint: None,
        })
        .into_response(),
        Api::Text => Json(TextCompletion {
            id,
            object: "text_completion",
            created,
            model,
            choices: done
                .choices
                .into_iter()
                .enumerate()
                .map(|(index, c)| {
                    let lp = logprobs.then(|| {
                        let mut lp = TextLogprobs::default();
                        for (offset, entry) in c.logprobs {
                            text_logprob(entry, offset, &mut lp);
                        }
                        lp
                    });
                    TextChoice { index, text: c.content, logprobs: lp, finish_reason: c.finish.map(finish_reason) }
                })
                .collect(),
            usage: Some(Some(usage(done.counts))),
            system_fingerprint: None,
        })
        .into_response(),
    };
    Ok(body)
}

/// Answers as a stream of chunks ending in `data: [DONE]`.
pub fn stream(g: Generation, api: Api, include_usage: bool) -> Response {
    let chunks = Chunks {
        api,
        id: new_id(if api == Api::Chat { "chatcmpl-" } else { "cmpl-" }),
        created: unix_now(),
        model: g.model_name().to_string(),
        include_usage,
        offsets: vec![0; g.n()],
    };
    let mut first = Vec::new();
    if api == Api::Chat {
        // The role comes first, in a chunk of its own per choice.
        for index in 0..g.n() {
            let delta = Delta { role: Some("assistant"), content: Some(String::new()), ..Delta::default() };
            first.push(chunks.chat(index, delta, None, None));
        }
    }
    framing::sse(frames(g, first, chunks), None)
}

struct Chunks {
    api: Api,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// Per choice, bytes of text sent so far (the legacy API's `text_offset`).
    offsets: Vec<usize>,
}

impl Chunks {
    fn chat(
        &self,
        index: usize,
        delta: Delta,
        logprobs: Option<ChatLogprobs>,
        finish_reason: Option<&'static str>,
    ) -> SseEvent {
        framing::event(
            None,
            &ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk",
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChunkChoice { index, delta, logprobs, finish_reason }],
                system_fingerprint: None,
                usage: self.include_usage.then_some(None),
            },
        )
    }

    fn text(&self, choices: Vec<TextChoice>, usage: Option<Usage>) -> SseEvent {
        framing::event(
            None,
            &TextCompletion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices,
                usage: (self.include_usage || usage.is_some()).then_some(usage),
                system_fingerprint: None,
            },
        )
    }
}

impl Encode for Chunks {
    type Frame = SseEvent;

    fn reply(&mut self, _: &Generation, reply: Reply, out: &mut Vec<SseEvent>) {
        match (self.api, reply) {
            (Api::Chat, Reply::Piece { index, deltas, logprob }) => {
                let mut lp = logprob.map(|lp| ChatLogprobs { content: vec![lp], refusal: None });
                if deltas.is_empty() {
                    out.push(self.chat(index, Delta::default(), lp.take(), None));
                }
                for d in deltas {
                    out.push(self.chat(index, tools::delta(d), lp.take(), None));
                }
            }
            (Api::Text, Reply::Piece { index, deltas, logprob }) => {
                let text: String = deltas
                    .into_iter()
                    .filter_map(|d| match d {
                        ChatDelta::Content(t) => Some(t),
                        _ => None,
                    })
                    .collect();
                let lp = logprob.map(|entry| {
                    let mut lp = TextLogprobs::default();
                    text_logprob(entry, self.offsets[index], &mut lp);
                    lp
                });
                self.offsets[index] += text.len();
                out.push(self.text(vec![TextChoice { index, text, logprobs: lp, finish_reason: None }], None));
            }
            (Api::Chat, Reply::Done { index, finish, .. }) => {
                out.push(self.chat(index, Delta::default(), None, Some(finish_reason(finish))))
            }
            (Api::Text, Reply::Done { index, finish, .. }) => {
                let choice = TextChoice {
                    index,
                    text: String::new(),
                    logprobs: None,
                    finish_reason: Some(finish_reason(finish)),
                };
                out.push(self.text(vec![choice], None));
            }
        }
    }

    fn end(&mut self, g: &Generation, out: &mut Vec<SseEvent>) {
        if self.include_usage {
            // The chunk with `choices: []` and the usage.
            let u = usage(g.counts());
            out.push(match self.api {
                Api::Chat => framing::event(
                    None,
                    &ChatChunk {
                        id: self.id.clone(),
                        object: "chat.completion.chunk",
                        created: self.created,
                        model: self.model.clone(),
                        choices: Vec::new(),
                        system_fingerprint: None,
                        usage: Some(Some(u)),
                    },
                ),
                Api::Text => self.text(Vec::new(), Some(u)),
            });
        }
        out.push(SseEvent::default().data("[DONE]"));
    }

    fn fail(&mut self, _: &Generation, error: ApiError, out: &mut Vec<SseEvent>) {
        out.push(SseEvent::default().data(error.body().to_string()));
    }
}
