//! An HTTP API as a library, speaking OpenAI's Chat Completions and Responses, Anthropic's
//! Messages and Ollama's native API: an axum [`Router`] a custom server nests among its own
//! routes, behind its own middleware, over a registry of models that load on first use, stay
//! loaded for a keep-alive and give way least recently used first.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use llama::server::Server;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let llm = Server::builder().model("chat", "/models/chat.gguf").parallel(4).build()?;
//! tokio::spawn(llm.background());
//! let app = Router::new().route("/", get(|| async { "my app" })).nest("/llm", llm.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Clients then use `http://127.0.0.1:8080/llm/v1` as their OpenAI base URL, and
//! `http://127.0.0.1:8080/llm` as their Anthropic or Ollama one.
//!
//! # Routes
//! - OpenAI: `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/responses`,
//!   `POST /v1/embeddings`, `GET /v1/models`, `GET /v1/models/{model}`.
//! - Anthropic: `POST /v1/messages`, `POST /v1/messages/count_tokens`.
//! - Ollama: `POST /api/chat`, `POST /api/generate`, `POST /api/embed`, `POST /api/embeddings`,
//!   `GET /api/tags`, `GET /api/ps`, `POST /api/show`, `GET /api/version`, and `/api/pull`,
//!   `push`, `create`, `copy`, `delete`, which say that models are configured at start.
//! - `GET /health`, `GET /metrics` (Prometheus text), `POST /tokenize`, `POST /detokenize`.
//!
//! Every protocol's request becomes the same [`plan::Plan`] and every reply the same
//! protocol-free steps, which each protocol's module encodes. Errors take the shape of the
//! protocol the path belongs to.
//!
//! # Security
//! A server on loopback is reachable from every web page its user opens. By default the router
//! therefore refuses, before any model is touched:
//! - a `Host` that is not a loopback name or one given to [`ServerBuilder::allow_hosts`] (421):
//!   DNS rebinding points an attacker's name at 127.0.0.1, and the browser then sends that name;
//! - a state-changing request (`POST`) carrying a browser `Origin` that is neither the server's
//!   own nor one given to [`ServerBuilder::allow_origins`] (403);
//! - a body declared as anything but JSON (415): `text/plain`, forms and multipart are what a page
//!   may send cross-site without a CORS preflight.
//!
//! Requests without `Host` or `Origin` (curl, the SDKs outside a browser) are not affected.
//!
//! # Without axum's router
//! [`openai`] (wire types), [`plan`] (a request's samplers and limits), [`check`] (a body read
//! and checked), [`responses::check`], [`anthropic::check`], [`ollama::check`] and
//! [`ollama::check_generate`] (the other protocols' bodies), [`metrics::render`] (Prometheus
//! text) and [`ApiError`] (each protocol's error body and the status) take bytes and values, not
//! axum types, for servers built on another framework.

mod access_log;
pub mod anthropic;
mod auth;
mod body;
pub mod check;
mod completions;
mod error;
mod framing;
mod generation;
mod keep_alive;
mod media;
pub mod metrics;
pub mod ollama;
pub mod openai;
pub mod plan;
mod prompt;
#[cfg(test)]
mod protocol_tests;
mod registry;
pub mod responses;
mod routes;
mod security;
#[cfg(test)]
mod tests;
mod tools;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

pub use error::ApiError;
pub use keep_alive::{KeepAlive, KeepAliveError};
pub(crate) use registry::EngineConfig;
use registry::Registry;

use crate::{FlashAttention, KvCacheType};

/// A model a client can ask for by name.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// What clients send as `model`.
    pub name: String,
    /// The GGUF file.
    pub path: PathBuf,
    /// A multimodal projector (`mmproj` GGUF) made for the model: requests may then carry
    /// images or audio (needs feature `mtmd`).
    pub projector: Option<PathBuf>,
    /// Which media the projector takes, (images, audio): read from it by
    /// [`ServerBuilder::build`].
    pub media: (bool, bool),
}

/// What [`ServerBuilder::build`] refuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// No model was given.
    #[error("no model to serve: add one with `model(name, path)`")]
    NoModel,
    /// A model name is empty or used twice.
    #[error("model name {0:?} is empty or used twice")]
    ModelName(String),
    /// A projector was given for a model not served, or its file cannot be used.
    #[error("projector for model {model:?}: {reason}")]
    Projector {
        /// The model it was given for.
        model: String,
        /// What is wrong.
        reason: String,
    },
    /// An origin is not a valid header value.
    #[error("{0:?} is not a valid origin (scheme://host[:port], or `*`)")]
    Origin(String),
}

/// Sets up a [`Server`]. Defaults: 4 slots and a 4,096-token KV cache per model, 64 queued
/// requests, 2 GiB of RAM prefix cache, a 60 s stall timeout, 5 min keep-alive, 3 models loaded
/// at once, 4 MiB bodies, no API key, loopback hosts and no other origin.
#[derive(Debug, Clone)]
#[must_use]
pub struct ServerBuilder {
    models: Vec<ModelSpec>,
    projectors: Vec<(String, PathBuf)>,
    engine: EngineConfig,
    max_loaded: usize,
    keep_alive: KeepAlive,
    api_key: Option<String>,
    max_body: usize,
    origins: Vec<String>,
    hosts: Vec<String>,
    load_wait: Duration,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            models: Vec::new(),
            projectors: Vec::new(),
            engine: EngineConfig::default(),
            max_loaded: 3,
            keep_alive: KeepAlive::For(Duration::from_secs(300)),
            api_key: None,
            max_body: 4 << 20,
            origins: Vec::new(),
            hosts: Vec::new(),
            load_wait: Duration::from_secs(120),
        }
    }
}

impl ServerBuilder {
    /// Serves the GGUF file at `path` as `name`. Repeatable; the first is the default model.
    pub fn model(mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.models.push(ModelSpec { name: name.into(), path: path.into(), projector: None, media: (false, false) });
        self
    }

    /// Pairs a multimodal projector (`mmproj` GGUF) with the model served as `model`, so its
    /// requests may carry images and audio (OpenAI `image_url` data URLs and `input_audio`).
    /// Needs feature `mtmd`; [`build`](Self::build) refuses a projector for a model not given.
    pub fn projector(mut self, model: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.projectors.push((model.into(), path.into()));
        self
    }

    /// Requests each model decodes together (its engine's slots).
    pub fn parallel(mut self, slots: usize) -> Self {
        self.engine.parallel = slots.max(1);
        self
    }

    /// KV cache size in tokens per model, shared by its slots (capped at the training context).
    pub fn ctx(mut self, tokens: usize) -> Self {
        self.engine.ctx = tokens;
        self
    }

    /// Threads per model (default: the available cores).
    pub fn threads(mut self, threads: usize) -> Self {
        self.engine.threads = Some(threads.max(1));
        self
    }

    /// Requests that may wait for a slot, per model; beyond, 503 with `Retry-After`.
    pub fn max_queue(mut self, requests: usize) -> Self {
        self.engine.max_queue = requests.max(1);
        self
    }

    /// Host RAM per model, in bytes, for the prefix cache's second tier (0: off).
    pub fn cache_ram(mut self, bytes: usize) -> Self {
        self.engine.cache_ram = bytes;
        self
    }

    /// How long a client may read nothing from a stream before its request is cancelled and
    /// its slot freed (`None`: forever).
    pub fn stall_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.engine.stall_timeout = timeout;
        self
    }

    /// KV cache element types (default F16 for both; quantized V needs flash attention).
    pub fn cache_type(mut self, k: KvCacheType, v: KvCacheType) -> Self {
        self.engine.cache_type = Some((k, v));
        self
    }

    /// Flash attention (default: llama.cpp's choice, on where the backend has it).
    pub fn flash_attention(mut self, fa: FlashAttention) -> Self {
        self.engine.flash_attention = Some(fa);
        self
    }

    /// Models loaded at once; loading another evicts the least recently used idle one.
    pub fn max_loaded_models(mut self, n: usize) -> Self {
        self.max_loaded = n.max(1);
        self
    }

    /// How long an idle model stays loaded (a request's `keep_alive` overrides it).
    pub fn keep_alive(mut self, keep_alive: KeepAlive) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Requires `Authorization: Bearer <key>` (or `x-api-key: <key>`, as Anthropic's clients send
    /// it) on every route but `/health`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Largest request body in bytes (beyond: 413).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Browser origins (`scheme://host[:port]`) that may call the API, with CORS; `*` for any.
    pub fn allow_origins<S: Into<String>>(mut self, origins: impl IntoIterator<Item = S>) -> Self {
        self.origins.extend(origins.into_iter().map(Into::into));
        self
    }

    /// Host names (without port) requests may address besides loopback names; `*` for any,
    /// as a server listening on every interface under names it cannot know needs.
    pub fn allow_hosts<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> Self {
        self.hosts.extend(hosts.into_iter().map(Into::into));
        self
    }

    /// Longest a request waits for its model to load, or for room to load it (then 503).
    pub fn load_wait(mut self, wait: Duration) -> Self {
        self.load_wait = wait;
        self
    }

    /// Checks the settings. Loads nothing: models load on first use or in
    /// [`Server::background`].
    pub fn build(self) -> Result<Server, ServerError> {
        if self.models.is_empty() {
            return Err(ServerError::NoModel);
        }
        for (i, m) in self.models.iter().enumerate() {
            if m.name.is_empty() || self.models[..i].iter().any(|o| o.name == m.name) {
                return Err(ServerError::ModelName(m.name.clone()));
            }
        }
        let mut models = self.models;
        for (name, path) in self.projectors {
            let projector_error = |reason: String| ServerError::Projector { model: name.clone(), reason };
            let spec = models
                .iter_mut()
                .find(|m| m.name == name)
                .ok_or_else(|| projector_error("no model of that name is served".into()))?;
            spec.media = media::probe(&path).map_err(projector_error)?;
            spec.projector = Some(path);
        }
        let cors = security::cors(&self.origins)?;
        let guard = Arc::new(security::Guard::new(&self.hosts, &self.origins));
        let registry = Registry::new(models, self.engine, self.max_loaded, self.keep_alive, self.load_wait);
        let state = routes::AppState {
            registry,
            http: Arc::new(metrics::HttpMetrics::default()),
            body_limit: body::BodyLimit(self.max_body),
            api_key: self.api_key.map(Arc::from),
            guard,
        };
        Ok(Server { state, cors })
    }
}

/// The API over a set of models: [`router`](Self::router) to serve it,
/// [`background`](Self::background) to preload and unload, [`shutdown`](Self::shutdown) at the
/// end. Cheap to clone; clones share the models.
#[derive(Clone)]
pub struct Server {
    state: routes::AppState,
    cors: Option<tower_http::cors::CorsLayer>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("models", &self.state.registry.names()).finish_non_exhaustive()
    }
}

impl Server {
    /// Starts the settings; see [`ServerBuilder`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The routes, ready to serve or to [`nest`](Router::nest) under a prefix.
    pub fn router(&self) -> Router {
        routes::router(self.state.clone(), self.cors.clone())
    }

    /// Loads the default model, then unloads models whose keep-alive ran out, until the
    /// server's last clone is dropped. Spawn it on the runtime that serves the router.
    pub fn background(&self) -> impl Future<Output = ()> + Send + 'static {
        let registry = self.state.registry.clone();
        async move {
            registry.preload();
            registry.run_expiry().await;
        }
    }

    /// The models, by name, in the order given.
    pub fn models(&self) -> Vec<String> {
        self.state.registry.names()
    }

    /// Everything `/metrics` shows, as Prometheus text.
    pub fn prometheus(&self) -> String {
        metrics::render(&self.state.http, &self.state.registry.stats())
    }

    /// Unloads every model: requests still running end as cancelled. Blocks while the engines
    /// stop (call it from `spawn_blocking` inside a runtime).
    pub fn shutdown(&self) {
        drop(self.state.registry.unload_all());
    }
}
