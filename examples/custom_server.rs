//! Embedding the OpenAI-compatible API in your own axum server: [`llama::server`]'s router
//! nested under `/llm`, behind your own auth middleware, next to your own routes and state.
//!
//! ```text
//! cargo run --release --example custom_server
//! curl -H 'x-team-token: demo' -H 'content-type: application/json' \
//!     -d '{"messages":[{"role":"user","content":"Hi"}]}' http://127.0.0.1:8081/llm/v1/chat/completions
//! ```
//!
//! OpenAI clients take `http://127.0.0.1:8081/llm/v1` as their base URL and send the token as
//! a default header. With no `--model`, the default model is fetched on first use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use llama::server::Server;

/// Your server's own state, unrelated to the models.
#[derive(Clone, Default)]
struct AppState {
    visits: Arc<AtomicU64>,
}

#[derive(Parser)]
struct Cli {
    /// Port on loopback (0: any free port).
    #[arg(long, default_value_t = 8081)]
    port: u16,
    /// GGUF model file (default: SmolLM2-135M-Instruct, fetched on first use).
    #[arg(long, short = 'm')]
    model: Option<std::path::PathBuf>,
    /// The token your own auth layer expects in `x-team-token`.
    #[arg(long, default_value = "demo")]
    token: String,
}

/// Your own route, with your own state.
async fn hello(State(app): State<AppState>) -> String {
    format!("hello, visitor {}\n", app.visits.fetch_add(1, Ordering::Relaxed) + 1)
}

/// Your own auth: here a shared token in a header of your choosing.
async fn team_only(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    match req.headers().get("x-team-token").and_then(|v| v.to_str().ok()) {
        Some(t) if t == &*token => next.run(req).await,
        _ => (StatusCode::UNAUTHORIZED, "team token required\n").into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let path = match cli.model {
        Some(p) => p,
        None => llama_examples::models::default_model()?,
    };
    let llm = Server::builder().model("smollm2", path).parallel(2).ctx(2048).build()?;
    tokio::spawn(llm.background());
    let token: Arc<str> = cli.token.into();
    let app = Router::new()
        .route("/hello", get(hello))
        .with_state(AppState::default())
        .nest("/llm", llm.router().layer(middleware::from_fn_with_state(token, team_only)));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", cli.port)).await?;
    println!("serving at http://{}/llm/v1", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
