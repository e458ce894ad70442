//! From a request's options to what the engine runs: one sampler chain per choice and the
//! generation parameters. Checked in two steps: value ranges before the model is loaded (a
//! bad request must not cost a model load), then what needs the model (token ids of
//! `logit_bias`, grammars, schemas, `max_tokens` against the context).

use std::hash::{BuildHasher, RandomState};

use crate::{GenerateParams, Model, Penalties, Sampler, Token};
use serde_json::Value;

use crate::server::error::ApiError;
use crate::server::keep_alive::KeepAlive;
use crate::server::openai::{KeepAliveValue, Options, ResponseFormat};

// Unset sampling options fall back to what local servers commonly use: OpenAI's own defaults
// (temperature 1, no truncation) make small models ramble.
const TEMPERATURE: f64 = 0.8;
const TOP_K: i64 = 40;
const TOP_P: f64 = 0.95;
const MIN_P: f64 = 0.05;
const MAX_STOP: usize = 16;
/// Longest stop sequence, in bytes: every one is searched for after each token, on the engine
/// thread all requests share.
const MAX_STOP_LEN: usize = 256;
const MAX_TOP_LOGPROBS: i64 = 20;
/// Longest GBNF grammar accepted. llama.cpp prints a grammar that fails to parse to stderr in
/// full: without a bound, one request could write megabytes into the server's log.
const MAX_GRAMMAR: usize = 64 << 10;

/// What a completion must follow, if anything.
#[derive(Debug, Clone)]
pub enum Constraint {
    /// Free text.
    None,
    /// Any JSON value.
    Json,
    /// JSON following this JSON Schema.
    Schema(Value),
    /// Text following this GBNF grammar.
    Grammar(String),
}

/// A request's generation options, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The model asked for (`None`: the default one).
    pub model: Option<String>,
    /// Answer as server-sent events.
    pub stream: bool,
    /// A streamed answer ends with a usage chunk.
    pub include_usage: bool,
    /// Choices to generate.
    pub n: usize,
    /// Tokens per choice at most (`None`: until the context ends).
    pub max_tokens: Option<usize>,
    max_tokens_param: &'static str,
    /// `max_tokens` over the context is a cap, not an error.
    cap_max_tokens: bool,
    /// Texts that end a choice.
    pub stop: Vec<String>,
    /// `Some(k)`: report log-probabilities, with the `k` most likely alternatives.
    pub logprobs: Option<usize>,
    /// How long the model stays loaded after this request.
    pub keep_alive: Option<KeepAlive>,
    temperature: f32,
    top_k: i32,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    presence_penalty: f32,
    frequency_penalty: f32,
    seed: u32,
    logit_bias: Vec<(i32, f32)>,
    constraint: Constraint,
}

fn within<T: PartialOrd + std::fmt::Display + Copy>(param: &str, v: T, lo: T, hi: T) -> Result<T, ApiError> {
    // NaN and infinities fail this too.
    if v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(ApiError::invalid(param, format!("`{param}` must be between {lo} and {hi}, got {v}")))
    }
}

/// A request's `keep_alive`, checked.
pub fn keep_alive(value: Option<&KeepAliveValue>) -> Result<Option<KeepAlive>, ApiError> {
    let parsed = match value {
        None => return Ok(None),
        Some(KeepAliveValue::Text(s)) => s.parse(),
        Some(KeepAliveValue::Seconds(s)) => KeepAlive::from_seconds(*s),
    };
    parsed.map(Some).map_err(|e| ApiError::invalid("keep_alive", e.to_string()))
}

fn random_seed() -> u32 {
    // A fresh `RandomState` is randomly keyed per instance: enough for a sampling seed.
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

impl Plan {
    /// Checks the options shared by chat and text completions. `max_tokens` is the field the
    /// endpoint takes it from (`max_completion_tokens` wins on chat); `logprobs` the number
    /// of alternatives asked for, when log-probabilities are.
    pub fn new(
        o: &Options,
        max_tokens: Option<(&'static str, i64)>,
        logprobs: Option<usize>,
        format: Option<&ResponseFormat>,
    ) -> Result<Plan, ApiError> {
        let max_tokens_param = max_tokens.map_or("max_tokens", |(p, _)| p);
        let max_tokens = match max_tokens {
            None => None,
            Some((param, v)) if v < 1 => {
                return Err(ApiError::invalid(param, format!("`{param}` must be at least 1, got {v}")))
            }
            Some((_, v)) => Some(usize::try_from(v).unwrap_or(usize::MAX)),
        };
        let n = within("n", o.n.unwrap_or(1), 1, 128)? as usize;
        let stop = o.stop.as_ref().map(|s| s.0.clone()).unwrap_or_default();
        if stop.len() > MAX_STOP {
            return Err(ApiError::invalid("stop", format!("at most {MAX_STOP} stop sequences, got {}", stop.len())));
        }
        if let Some(long) = stop.iter().find(|s| s.len() > MAX_STOP_LEN) {
            return Err(ApiError::invalid(
                "stop",
                format!("a stop sequence may be at most {MAX_STOP_LEN} bytes, got one of {}", long.len()),
            ));
        }
        let temperature = within("temperature", o.temperature.unwrap_or(TEMPERATURE), 0.0, 2.0)? as f32;
        let top_p = within("top_p", o.top_p.unwrap_or(TOP_P), 0.0, 1.0)? as f32;
        let top_k = within("top_k", o.top_k.unwrap_or(TOP_K), 0, 1 << 20)? as i32;
        let min_p = within("min_p", o.min_p.unwrap_or(MIN_P), 0.0, 1.0)? as f32;
        let repeat_penalty = within("repeat_penalty", o.repeat_penalty.unwrap_or(1.0), 0.0, 10.0)? as f32;
        let presence_penalty = within("presence_penalty", o.presence_penalty.unwrap_or(0.0), -2.0, 2.0)? as f32;
        let frequency_penalty = within("frequency_penalty", o.frequency_penalty.unwrap_or(0.0), -2.0, 2.0)? as f32;
        // Any integer is a valid seed; only its low 32 bits reach the sampler.
        let seed = o.seed.map_or_else(random_seed, |s| s as u32);
        let mut logit_bias = Vec::new();
        for (key, &bias) in o.logit_bias.iter().flatten() {
            let param = format!("logit_bias.{key}");
            let token = key
                .parse::<i32>()
                .map_err(|_| ApiError::invalid(&param, format!("`logit_bias` keys are token ids, got {key:?}")))?;
            let bias = within(&param, bias, -100.0, 100.0)?;
            logit_bias.push((token, bias as f32));
        }
        if o.grammar.as_ref().is_some_and(|g| g.len() > MAX_GRAMMAR) {
            return Err(ApiError::invalid("grammar", format!("the grammar is longer than {MAX_GRAMMAR} bytes")));
        }
        let constraint = match (format, &o.grammar) {
            (Some(ResponseFormat::Text) | None, None) => Constraint::None,
            (Some(ResponseFormat::Text) | None, Some(g)) => Constraint::Grammar(g.clone()),
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("grammar", "give either `grammar` or a JSON `response_format`, not both"))
            }
            (Some(ResponseFormat::JsonObject), None) => Constraint::Json,
            (Some(ResponseFormat::JsonSchema { json_schema }), None) => match &json_schema.schema {
                Some(schema) if schema.is_object() || schema.is_boolean() => Constraint::Schema(schema.clone()),
                Some(_) => {
                    return Err(ApiError::invalid("response_format.json_schema.schema", "the schema must be an object"))
                }
                None => Constraint::Json,
            },
        };
        Ok(Plan {
            model: o.model.clone(),
            stream: o.stream.unwrap_or(false),
            include_usage: o.stream_options.as_ref().and_then(|s| s.include_usage).unwrap_or(false),
            n,
            max_tokens,
            max_tokens_param,
            cap_max_tokens: false,
            stop,
            logprobs,
            keep_alive: keep_alive(o.keep_alive.as_ref())?,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            presence_penalty,
            frequency_penalty,
            seed,
            logit_bias,
            constraint,
        })
    }

    /// Checks against the model and builds one sampler per choice (seeds `seed + i`, so the
    /// choices differ) and the generation parameters. An unset `max_tokens` means "until the
    /// context ends", as in llama-server and Ollama: the engine takes KV cells as a reply grows.
    pub fn build(&self, model: &Model, n_ctx: usize) -> Result<(Vec<Sampler>, GenerateParams), ApiError> {
        let max_tokens = match self.max_tokens {
            Some(m) if m >= n_ctx && self.cap_max_tokens => n_ctx,
            Some(m) if m >= n_ctx => {
                let param = self.max_tokens_param;
                return Err(ApiError::invalid(
                    param,
                    format!("`{param}` of {m} does not fit in the context of {n_ctx} tokens"),
                ));
            }
            Some(m) => m,
            None => n_ctx,
        };
        let vocab = model.vocab();
        let bias: Vec<(Token, f32)> = self
            .logit_bias
            .iter()
            .map(|&(t, b)| {
                vocab.check(Token(t)).map_err(|_| {
                    ApiError::invalid(format!("logit_bias.{t}"), format!("token id {t} is not in the vocabulary"))
                })?;
                // OpenAI documents -100 as a ban.
                Ok((Token(t), if b <= -100.0 { f32::NEG_INFINITY } else { b }))
            })
            .collect::<Result<_, ApiError>>()?;
        let samplers = (0..self.n)
            .map(|i| self.sampler(model, &bias, self.seed.wrapping_add(i as u32)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut params = GenerateParams::default().max_tokens(max_tokens).stop(self.stop.iter().cloned());
        if let Some(k) = self.logprobs {
            params = params.logprobs(true).top_logprobs(k);
        }
        Ok((samplers, params))
    }

    /// A token limit past the context becomes "until the context ends" instead of a 400: for
    /// protocols whose clients send a large limit by habit (Anthropic's `max_tokens` is
    /// required, and agents send tens of thousands).
    pub fn cap_to_context(mut self) -> Plan {
        self.cap_max_tokens = true;
        self
    }

    /// A grammar or schema constrains the output.
    pub fn constrained(&self) -> bool {
        !matches!(self.constraint, Constraint::None)
    }

    fn sampler(&self, model: &Model, bias: &[(Token, f32)], seed: u32) -> Result<Sampler, ApiError> {
        let mut s = Sampler::chain();
        if self.repeat_penalty != 1.0 || self.frequency_penalty != 0.0 || self.presence_penalty != 0.0 {
            // llama.cpp's default window (64 tokens).
            let p = Penalties::default()
                .repeat(self.repeat_penalty)
                .frequency(self.frequency_penalty)
                .presence(self.presence_penalty);
            s = s.penalties(p);
        }
        if !bias.is_empty() {
            s = s.logit_bias(model, bias).map_err(|e| ApiError::from_sampler("logit_bias", e))?;
        }
        s = match &self.constraint {
            Constraint::None => s,
            Constraint::Json => s.json(model).map_err(|e| ApiError::from_sampler("response_format", e))?,
            Constraint::Schema(schema) => s
                .json_schema(model, schema)
                .map_err(|e| ApiError::from_sampler("response_format.json_schema.schema", e))?,
            Constraint::Grammar(g) => s.grammar(model, g, "root").map_err(|e| ApiError::from_sampler("grammar", e))?,
        };
        if self.temperature <= 0.0 {
            return Ok(s.greedy_pick());
        }
        Ok(s.top_k(self.top_k).top_p(self.top_p).min_p(self.min_p).temp(self.temperature).dist(seed))
    }
}

/// The number of alternatives asked for by chat's `logprobs` + `top_logprobs`.
pub fn chat_logprobs(logprobs: Option<bool>, top: Option<i64>) -> Result<Option<usize>, ApiError> {
    match (logprobs.unwrap_or(false), top) {
        (false, None | Some(0)) => Ok(None),
        (false, Some(_)) => Err(ApiError::invalid("top_logprobs", "`top_logprobs` needs `logprobs: true`")),
        (true, top) => Ok(Some(within("top_logprobs", top.unwrap_or(0), 0, MAX_TOP_LOGPROBS)? as usize)),
    }
}

/// The legacy completions API's `logprobs`: the number of alternatives, and asking at all.
pub fn completion_logprobs(logprobs: Option<i64>) -> Result<Option<usize>, ApiError> {
    logprobs.map(|k| within("logprobs", k, 0, MAX_TOP_LOGPROBS).map(|k| k as usize)).transpose()
}
