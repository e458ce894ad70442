//! The HTTP surface: OpenAI's endpoints plus `/health`, `/metrics`, `/tokenize` and
//! `/detokenize`. A handler reads top to bottom: parse and check the body, take the model
//! (loading it if needed), submit to its engine, answer.

use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::CorsLayer;

use crate::engine::{Prompt, Request};
use crate::server::access_log::{self, RequestRecord};
use crate::server::body::{BodyLimit, JsonBody, Limited};
use crate::server::check::{self, Checked, CheckedEmbeddings, Input};
use crate::server::completions::{self, Api};
use crate::server::error::{self, ApiError};
use crate::server::generation::Generation;
use crate::server::media;
use crate::server::metrics::{self, HttpMetrics};
use crate::server::openai::{
    DetokenizeRequest, EmbeddingData, EmbeddingList, EmbeddingUsage, EmbeddingVector, ModelList, TokenizeRequest,
};
use crate::server::registry::{Lease, Registry};
use crate::server::security::{self, Guard};
use crate::server::{anthropic, auth, ollama, prompt, responses};
use crate::{AddSpecial, ControlText, EmbedError, Normalize};

#[derive(Clone)]
pub(crate) struct AppState {
    pub registry: Arc<Registry>,
    pub http: Arc<HttpMetrics>,
    pub body_limit: BodyLimit,
    pub api_key: Option<Arc<str>>,
    pub guard: Arc<Guard>,
}

impl FromRef<AppState> for BodyLimit {
    fn from_ref(s: &AppState) -> BodyLimit {
        s.body_limit
    }
}

pub(crate) fn router(state: AppState, cors: Option<CorsLayer>) -> Router {
    let router = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/responses", post(responses::create))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/pull", post(ollama::pull))
        .route("/api/version", get(ollama::version))
        .route("/api/push", post(ollama::manage))
        .route("/api/create", post(ollama::manage))
        .route("/api/copy", post(ollama::manage))
        .route("/api/delete", delete(ollama::manage))
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(|uri: Uri| async move { ApiError::route_not_found(uri.path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(from_fn_with_state(state.api_key.clone(), auth::middleware))
        // Outside the key check: a page must not learn whether its guess was right.
        .layer(from_fn_with_state(state.guard.clone(), security::middleware))
        // A bug in a handler must cost one request a 500, not the connection or the process;
        // inside the access log, which then records the 500.
        .layer(CatchPanicLayer::custom(panicked))
        .layer(from_fn(error::reshape))
        .layer(from_fn_with_state(state.http.clone(), access_log::middleware))
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
    openai_answer(s, record, check::chat(&body)?, Api::Chat).await
}

async fn completions(
    State(s): State<AppState>,
    Extension(record): Extension<Arc<RequestRecord>>,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
    openai_answer(s, record, check::completion(&body)?, Api::Text).await
}

async fn openai_answer(
    s: AppState,
    record: Arc<RequestRecord>,
    checked: Checked,
    api: Api,
) -> Result<Response, ApiError> {
    let (stream, include_usage, logprobs) = (checked.plan.stream, checked.plan.include_usage, checked.shape.logprobs);
    let generation = admit(&s, record, checked).await?;
    if stream {
        Ok(completions::stream(generation, api, include_usage))
    } else {
        completions::respond(generation, api, logprobs).await
    }
}

/// Takes the model, builds the engine request and submits it: what every protocol's
/// generation handler does once its body is checked.
pub(crate) async fn admit(s: &AppState, record: Arc<RequestRecord>, checked: Checked) -> Result<Generation, ApiError> {
    let Checked { plan, mut shape, input, media, user } = checked;
    note_user(&record, user.as_ref());
    let lease = s.registry.acquire(plan.model.as_deref(), plan.keep_alive).await?;
    let (samplers, params) = plan.build(&lease.model, lease.n_ctx())?;
    let request = match input {
        Input::Prompt(prompt) => media::request(&lease, prompt, media).await?.samplers(samplers).params(params),
        Input::Tools(tools) => {
            let model = lease.model.clone();
            // Parsing the template and rendering take milliseconds, longer on long conversations.
            let (rendered, samplers) =
                tokio::task::spawn_blocking(move || check::render_tools(&model, &tools, samplers))
                    .await
                    .map_err(|e| ApiError::internal(format!("the tools could not be prepared: {e}")))??;
            let request = Request::new(Prompt::Tokens(rendered.tokens.clone()))
                .samplers(samplers)
                .params(rendered.generate_params(params));
            shape.tools = Some(Arc::new(rendered));
            request
        }
    };
    Generation::start(lease, request, shape, record, s.http.clone()).await
}

async fn embeddings(
    State(s): State<AppState>,
    Extension(record): Extension<Arc<RequestRecord>>,
    Limited(body): Limited,
) -> Result<Json<EmbeddingList>, ApiError> {
    let CheckedEmbeddings { req, texts, base64, keep_alive } = check::embeddings(&body)?;
    note_user(&record, req.user.as_ref());
    let lease = s.registry.acquire(req.model.as_deref(), keep_alive).await?;
    let width = lease.model.n_embd_out();
    if let Some(d) = req.dimensions.filter(|&d| usize::try_from(d).ok() != Some(width)) {
        return Err(ApiError::invalid(
            "dimensions",
            format!("this model's embeddings have {width} dimensions, not {d}"),
        ));
    }
    let (vectors, prompt_tokens) = embed(&lease, texts, false).await?;
    record.prompt_tokens.store(prompt_tokens, Ordering::Relaxed);
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

/// Unit vectors of `texts` and the tokens they took: what every protocol's embedding route
/// does. With `truncate`, a text over the embedder's window is cut to it instead of refused.
pub(crate) async fn embed(
    lease: &Lease,
    texts: Vec<String>,
    truncate: bool,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let embedder = lease.embeddings().await?;
    let model = lease.model.clone();
    // Tokenized here, once: the counts are the usage, the tokens what the embedder reads.
    let mut tokenized = tokio::task::spawn_blocking(move || {
        let vocab = model.vocab();
        texts.iter().map(|t| vocab.tokenize(t, AddSpecial::Yes)).collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))?
    .map_err(|e| ApiError::invalid("input", e.to_string()))?;
    let vectors = match embedder.embed_tokens(tokenized.clone(), Normalize::Unit).await {
        Err(EmbedError::TooLong { n_ctx, .. }) if truncate && tokenized.iter().all(|t| !t.is_empty()) => {
            tokenized.iter_mut().for_each(|t| t.truncate(n_ctx));
            embedder.embed_tokens(tokenized.clone(), Normalize::Unit).await
        }
        other => other,
    }
    .map_err(embed_error)?;
    Ok((vectors, tokenized.iter().map(Vec::len).sum()))
}

pub(crate) fn note_user(record: &RequestRecord, user: Option<&String>) {
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
    use base64::Engine as _;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
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
