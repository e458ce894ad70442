//! What the pipeline needs from a model: one chat request at a time per caller, streamed, with an
//! optional JSON Schema, cancellable. Two implementations: the serving engine in this process
//! ([`Local`]) and any OpenAI-compatible server ([`crate::http::Http`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use llama::engine::{Engine, EngineParams, Event, Request};
use llama::{ChatMessage, FinishReason, GenerateParams, Model, Sampler};
use serde_json::Value;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// One chat request.
#[derive(Debug, Clone)]
pub struct Ask {
    pub system: String,
    pub user: String,
    /// Constrains the answer to JSON valid against this schema.
    pub schema: Option<Value>,
    pub max_tokens: usize,
    /// 0 is greedy.
    pub temperature: f32,
    pub seed: u32,
}

/// What came back.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub text: String,
    pub tokens: usize,
    /// Stopped by a token or context limit rather than by the model.
    pub cut: bool,
}

/// A model the pipeline can ask. `Sync`: research threads share one backend.
pub trait Backend: Sync {
    /// Runs `ask`, calling `on_token` with each token's text as it arrives. Returns early, with
    /// what it has, once `cancel` is set; the request is cancelled on the model's side too.
    fn ask(&self, ask: &Ask, cancel: &AtomicBool, on_token: &mut dyn FnMut(&str)) -> Result<Reply, Error>;

    /// Most sequences the model decoded together in one step so far, where the backend can
    /// see it.
    fn peak_step_sequences(&self) -> Option<usize> {
        None
    }
}

/// The serving engine in this process: requests researched at once share its decode steps.
pub struct Local {
    engine: Engine,
}

impl Local {
    /// Loads `model` (a GGUF path or a short name from the model fetcher; the default model
    /// when `None`) into an engine with `slots` sequences.
    pub fn load(model: Option<&str>, slots: usize, n_ctx: usize, threads: Option<usize>) -> Result<Local, Error> {
        use llama_examples::models::{by_name, default_model};
        let path = match model {
            None => default_model()?,
            Some(m) if Path::new(m).exists() => m.into(),
            Some(m) => by_name(m).map_err(|e| format!("--model {m}: not a file, and {e}"))?,
        };
        let model = Model::load(&path)?;
        let mut params = EngineParams::default().slots(slots).n_ctx(n_ctx);
        if let Some(t) = threads {
            params = params.threads(t);
        }
        Ok(Local { engine: Engine::new(&model, params)? })
    }
}

impl Backend for Local {
    fn ask(&self, ask: &Ask, cancel: &AtomicBool, on_token: &mut dyn FnMut(&str)) -> Result<Reply, Error> {
        let handle = self.engine.handle();
        let model = handle.model();
        let mut sampler = Sampler::chain();
        if let Some(schema) = &ask.schema {
            sampler = sampler.json_schema(model, schema)?;
        }
        // The server example's defaults, so both backends sample alike.
        let sampler = if ask.temperature <= 0.0 {
            sampler.greedy_pick()
        } else {
            sampler.top_k(40).top_p(0.95).min_p(0.05).temp(ask.temperature).dist(ask.seed)
        };
        let messages = vec![ChatMessage::system(ask.system.as_str()), ChatMessage::user(ask.user.as_str())];
        let request =
            Request::new(messages).sampler(sampler).params(GenerateParams::default().max_tokens(ask.max_tokens));
        let mut completion = handle.submit(request)?;
        let mut reply = Reply::default();
        while let Some(event) = completion.recv() {
            if cancel.load(Ordering::Relaxed) {
                // Dropping the completion would do as well; this says so explicitly.
                completion.cancel();
                return Ok(reply);
            }
            match event {
                Event::Piece { piece, .. } => {
                    reply.text.push_str(&piece.text);
                    reply.tokens += 1;
                    on_token(&piece.text);
                }
                Event::Done { finish, usage, .. } => {
                    reply.tokens = usage.completion_tokens;
                    reply.cut = matches!(finish, FinishReason::Length | FinishReason::ContextFull);
                    return Ok(reply);
                }
                Event::Error { message, .. } => return Err(message.into()),
                _ => {}
            }
        }
        Err("the engine stopped".into())
    }

    fn peak_step_sequences(&self) -> Option<usize> {
        Some(self.engine.metrics().max_step_sequences)
    }
}
