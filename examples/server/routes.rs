//! The HTTP surface: OpenAI's endpoints plus `/health`, `/metrics`, `/tokenize` and
//! `/detokenize`. A handler reads top to bottom: parse and check the body, take the model
//! (loading it if needed), submit to its engine, answer.

use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use llama::engine::{Prompt, Request};
use llama::tools::{ChatTemplates, RenderedChat};
use llama::{AddSpecial, ControlText, EmbedError, Model, Normalize, Sampler};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::CorsLayer;

use crate::access_log::{self, RequestRecord};
use crate::auth;
use crate::body::{self, BodyLimit, JsonBody, Limited};
use crate::error::ApiError;
use crate::generation::{Api, Generation, Shape};
use crate::keep_alive::KeepAlive;
use crate::metrics::{self, HttpMetrics};
use crate::models::Registry;
use crate::openai::{
    ChatRequest, CompletionRequest, DetokenizeRequest, EmbeddingData, EmbeddingList, EmbeddingRequest, EmbeddingUsage,
    EmbeddingVector, ModelList, Options, PromptInput, TokenizeRequest,
};
use crate::prompt;
use crate::sampling::{self, Plan};
use crate::tools;

/// Most texts one embedding request may carry (OpenAI's limit).
const MAX_EMBEDDING_INPUTS: usize = 2048;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub http: Arc<HttpMetrics>,
    pub body_limit: BodyLimit,
    pub api_key: Option<Arc<str>>,
}

impl FromRef<AppState> for BodyLimit {
    fn from_ref(s: &AppState) -> BodyLimit {
        s.body_limit
    }
}

pub fn router(state: AppState, cors: Option<CorsLayer>) -> Router {
    let router = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(|uri: Uri| async move { ApiError::route_not_found(uri.path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(from_fn_with_state(state.api_key.clone(), auth::middleware))
        .layer(from_fn_with_state(state.http.clone(), access_log::middleware))
        // A bug in a handler must cost one request a 500, not the connection or the process.
        .layer(CatchPanicLayer::custom(panicked))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

fn panicked(_: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::internal("internal error while answering this request").into_response()
}

async fn chat(
    State(s): State<AppState>,
    Extension(record): Extension<Arc<RequestRecord>>,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
    answer(s, record, check_chat(&body)?).await
}

async fn completions(
    State(s): State<AppState>,
    Extension(record): Extension<Arc<RequestRecord>>,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
    answer(s, record, check_completion(&body)?).await
}

/// A generation request read and checked before any model is touched: what the handlers do
/// first, and what the `server` fuzz target (`llama/fuzz`) drives with arbitrary bodies.
pub struct Checked {
    pub plan: Plan,
    pub shape: Shape,
    pub input: Input,
    /// The client's `user` field, for the access log.
    pub user: Option<String>,
}

/// What the model is asked: a prompt, or a chat with tools that the model's template renders.
pub enum Input {
    Prompt(Prompt),
    Tools(llama::tools::ChatRequest),
}

/// `POST /v1/chat/completions`'s body, checked.
pub fn check_chat(body: &[u8]) -> Result<Checked, ApiError> {
    let req: ChatRequest = body::parse(body)?;
    let options: Options = body::parse(body)?;
    let logprobs = sampling::chat_logprobs(req.logprobs, req.top_logprobs)?;
    let max_tokens = req
        .max_completion_tokens
        .map(|v| ("max_completion_tokens", v))
        .or(options.max_tokens.map(|v| ("max_tokens", v)));
    let plan = Plan::new(&options, max_tokens, logprobs, req.response_format.as_ref())?;
    let messages = prompt::chat(&req.messages)?;
    let tools = tools::request(&req, messages.clone())?;
    if tools.is_some() && plan.constrained() {
        return Err(ApiError::invalid("tools", "give either `tools` or a `grammar`/JSON `response_format`, not both"));
    }
    let shape = Shape {
        api: Api::Chat,
        n: plan.n,
        logprobs: logprobs.is_some(),
        include_usage: plan.include_usage,
        constrained: plan.constrained() || tools.is_some(),
        prompt_param: "messages",
        tools: None,
    };
    let input = match tools {
        Some(tools) => Input::Tools(tools),
        None => Input::Prompt(Prompt::Chat(messages)),
    };
    Ok(Checked { plan, shape, input, user: options.user })
}

/// `POST /v1/completions`'s body, checked.
pub fn check_completion(body: &[u8]) -> Result<Checked, ApiError> {
    let req: CompletionRequest = body::parse(body)?;
    let options: Options = body::parse(body)?;
    if req.echo == Some(true) {
        return Err(ApiError::invalid("echo", "`echo` is not supported"));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "`suffix` is not supported"));
    }
    let logprobs = sampling::completion_logprobs(req.logprobs)?;
    let max_tokens = options.max_tokens.map(|v| ("max_tokens", v));
    let plan = Plan::new(&options, max_tokens, logprobs, None)?;
    let prompt = prompt::completion(&req.prompt)?;
    let shape = Shape {
        api: Api::Text,
        n: plan.n,
        logprobs: logprobs.is_some(),
        include_usage: plan.include_usage,
        constrained: plan.constrained(),
        prompt_param: "prompt",
        tools: None,
    };
    Ok(Checked { plan, shape, input: Input::Prompt(prompt), user: options.user })
}

/// Takes the model, builds the engine request and answers, streaming or not.
async fn answer(s: AppState, record: Arc<RequestRecord>, checked: Checked) -> Result<Response, ApiError> {
    let Checked { plan, mut shape, input, user } = checked;
    note_user(&record, user.as_ref());
    let lease = s.registry.acquire(plan.model.as_deref(), plan.keep_alive).await?;
    let (samplers, params) = plan.build(&lease.model, lease.n_ctx())?;
    let request = match input {
        Input::Prompt(prompt) => Request::new(prompt).samplers(samplers).params(params),
        Input::Tools(tools) => {
            let model = lease.model.clone();
            // Parsing the template and rendering take milliseconds, longer on long conversations.
            let (rendered, samplers) = tokio::task::spawn_blocking(move || render_tools(&model, &tools, samplers))
                .await
                .map_err(|e| ApiError::internal(format!("the tools could not be prepared: {e}")))??;
            let request = Request::new(Prompt::Tokens(rendered.tokens.clone()))
                .samplers(samplers)
                .params(rendered.generate_params(params));
            shape.tools = Some(Arc::new(rendered));
            request
        }
    };
    let generation = Generation::start(lease, request, shape, record, s.http.clone()).await?;
    if plan.stream {
        Ok(generation.stream())
    } else {
        generation.respond().await
    }
}

/// A chat with tools: the model's own template renders messages and tools (llama.cpp's
/// `common/` pipeline) and each choice's sampler gets the tool-call grammar; the replies are
/// parsed into tool calls ([`Shape::tools`]). Blocking.
pub fn render_tools(
    model: &Model,
    chat: &llama::tools::ChatRequest,
    samplers: Vec<Sampler>,
) -> Result<(RenderedChat, Vec<Sampler>), ApiError> {
    let templates = ChatTemplates::new(model).map_err(|e| ApiError::invalid("tools", e.to_string()))?;
    let rendered = chat.render(&templates).map_err(tools::render_error)?;
    let samplers = samplers
        .into_iter()
        .map(|s| rendered.sampler(model, s).map_err(tools::render_error))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((rendered, samplers))
}

async fn embeddings(
    State(s): State<AppState>,
    Extension(record): Extension<Arc<RequestRecord>>,
    Limited(body): Limited,
) -> Result<Json<EmbeddingList>, ApiError> {
    let CheckedEmbeddings { req, texts, base64, keep_alive } = check_embeddings(&body)?;
    note_user(&record, req.user.as_ref());
    let lease = s.registry.acquire(req.model.as_deref(), keep_alive).await?;
    let width = lease.model.n_embd_out();
    if let Some(d) = req.dimensions.filter(|&d| usize::try_from(d).ok() != Some(width)) {
        return Err(ApiError::invalid(
            "dimensions",
            format!("this model's embeddings have {width} dimensions, not {d}"),
        ));
    }
    let embedder = lease.embeddings().await?;
    let model = lease.model.clone();
    let counted = texts.clone();
    let prompt_tokens = tokio::task::spawn_blocking(move || {
        let vocab = model.vocab();
        counted.iter().map(|t| vocab.tokenize(t, AddSpecial::Yes).map_or(0, |v| v.len())).sum::<usize>()
    })
    .await
    .unwrap_or(0);
    record.prompt_tokens.store(prompt_tokens, Ordering::Relaxed);
    let vectors = embedder.embed(texts, Normalize::Unit).await.map_err(embed_error)?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            index,
            embedding: if base64 { EmbeddingVector::Base64(base64_f32(&v)) } else { EmbeddingVector::Float(v) },
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list",
        data,
        model: lease.name.clone(),
        usage: EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens },
    }))
}

/// `POST /v1/embeddings`'s body, checked.
pub struct CheckedEmbeddings {
    pub req: EmbeddingRequest,
    pub texts: Vec<String>,
    pub base64: bool,
    pub keep_alive: Option<KeepAlive>,
}

pub fn check_embeddings(body: &[u8]) -> Result<CheckedEmbeddings, ApiError> {
    let mut req: EmbeddingRequest = body::parse(body)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("expected \"float\" or \"base64\", got {other:?}"),
            ))
        }
    };
    let keep_alive = sampling::keep_alive(req.keep_alive.as_ref())?;
    let texts = match std::mem::replace(&mut req.input, PromptInput::Texts(Vec::new())) {
        PromptInput::Texts(texts) => texts,
        PromptInput::Tokens(_) => return Err(ApiError::invalid("input", "token ids are not accepted here: send text")),
    };
    if texts.is_empty() || texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::invalid("input", format!("send 1 to {MAX_EMBEDDING_INPUTS} texts, got {}", texts.len())));
    }
    Ok(CheckedEmbeddings { req, texts, base64, keep_alive })
}

fn note_user(record: &RequestRecord, user: Option<&String>) {
    if let Some(u) = user {
        // Bounded: it is only for the log line.
        let _ = record.user.set(u.chars().take(64).collect());
    }
}

fn embed_error(e: EmbedError) -> ApiError {
    match e {
        EmbedError::TooLong { .. } | EmbedError::Tokenize(_) => ApiError::invalid("input", e.to_string()),
        EmbedError::NoEmbedding(_) => ApiError::bad_request(format!("this model does not produce embeddings: {e}")),
        EmbedError::Stopped => ApiError::unavailable(e.to_string()),
        _ => ApiError::internal(format!("embedding failed: {e}")),
    }
}

/// Little-endian `f32`s in standard base64, as OpenAI's `encoding_format: "base64"`.
fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn list_models(State(s): State<AppState>) -> Json<ModelList> {
    Json(ModelList { object: "list", data: s.registry.cards() })
}

async fn get_model(State(s): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    match s.registry.cards().into_iter().find(|c| c.id == name) {
        Some(card) => Ok(Json(card).into_response()),
        None => Err(ApiError::model_not_found(&name, &s.registry.names())),
    }
}

async fn health(State(s): State<AppState>) -> Response {
    let loading = s.registry.loading();
    if loading.is_empty() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading", "loading": loading}))).into_response()
    }
}

async fn prometheus(State(s): State<AppState>) -> Response {
    let text = metrics::render(&s.http, &s.registry.stats());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn tokenize(State(s): State<AppState>, JsonBody(req): JsonBody<TokenizeRequest>) -> Result<Response, ApiError> {
    let lease = s.registry.acquire(req.model.as_deref(), None).await?;
    let model = lease.model.clone();
    let add_special = if req.add_special.unwrap_or(false) { AddSpecial::Yes } else { AddSpecial::No };
    let with_pieces = req.with_pieces.unwrap_or(false);
    let body = tokio::task::spawn_blocking(move || {
        let vocab = model.vocab();
        let tokens =
            vocab.tokenize(&req.content, add_special).map_err(|e| ApiError::invalid("content", e.to_string()))?;
        Ok::<_, ApiError>(if with_pieces {
            let pieces: Vec<_> = tokens
                .iter()
                .map(|&t| {
                    let bytes = vocab.token_to_bytes(t, ControlText::Show).unwrap_or_default();
                    json!({"id": t.0, "piece": String::from_utf8_lossy(&bytes)})
                })
                .collect();
            json!({ "tokens": pieces })
        } else {
            json!({ "tokens": tokens.iter().map(|t| t.0).collect::<Vec<_>>() })
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))??;
    Ok(Json(body).into_response())
}

async fn detokenize(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<DetokenizeRequest>,
) -> Result<Response, ApiError> {
    let tokens = prompt::tokens("tokens", &req.tokens)?;
    let lease = s.registry.acquire(req.model.as_deref(), None).await?;
    let model = lease.model.clone();
    let content = tokio::task::spawn_blocking(move || {
        let vocab = model.vocab();
        for &t in &tokens {
            vocab
                .check(t)
                .map_err(|_| ApiError::invalid("tokens", format!("token id {t} is not in the vocabulary")))?;
        }
        vocab.detokenize(&tokens).map_err(|e| ApiError::invalid("tokens", e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(format!("detokenizing failed: {e}")))??;
    Ok(Json(json!({ "content": content })).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet() {
        // 1.0f32 = 00 00 80 3f; 2.0f32 = 00 00 00 40.
        assert_eq!(super::base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(super::base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(super::base64_f32(&[]), "");
    }
}
