//! Concurrent embedding requests, batched: an [`Embedder`] on its own thread that takes every
//! request waiting when it is free and embeds all their texts in one pass.
//!
//! Why not the generation engine: embeddings need a context built for them (pooling, no
//! generation, every token an output) and finish in one decode, so they gain nothing from
//! per-step scheduling. What they share with the engine is the shape — a thread owns the
//! context, a cloneable handle submits, each request gets its own reply — and the batching:
//! requests that arrive while a batch runs go together into the next.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};

use tokio::sync::oneshot;

use crate::{EmbedError, Embedder, Model, Normalize, Token};

/// Embeddings served from a background thread, shared by cloning: the thread ends when the last
/// clone is dropped (after answering what was queued).
///
/// ```no_run
/// use llama::engine::Embeddings;
/// let model = llama::Model::load("model.gguf")?;
/// let embeddings = Embeddings::new(&model, 2048)?; // Clone + Send + Sync
/// let vectors = embeddings.embed(vec!["a cat".into(), "a kitten".into()], llama::Normalize::Unit).wait()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Embeddings {
    tx: std_mpsc::Sender<Job>,
    stats: Arc<Stats>,
}

/// What the embedding thread has done.
#[derive(Debug, Default)]
struct Stats {
    requests: AtomicU64,
    passes: AtomicU64,
}

struct Job {
    input: Input,
    normalize: Normalize,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

/// The answer to one [`Embeddings::embed`]: wait for it (blocking) or `.await` it.
#[derive(Debug)]
#[must_use = "the vectors arrive through this"]
pub struct PendingEmbeddings(oneshot::Receiver<Result<Vec<Vec<f32>>, EmbedError>>);

impl PendingEmbeddings {
    /// Blocks until the vectors are ready. Not from inside an async runtime (`.await` there).
    pub fn wait(self) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.0.blocking_recv().unwrap_or(Err(EmbedError::Stopped))
    }
}

impl std::future::Future for PendingEmbeddings {
    type Output = Result<Vec<Vec<f32>>, EmbedError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(Err(EmbedError::Stopped)))
    }
}

impl Embeddings {
    /// An embedding context of `n_ctx` tokens per pass, on a new thread.
    pub fn new(model: &Model, n_ctx: usize) -> Result<Embeddings, EmbedError> {
        let mut embedder = Embedder::new(model, n_ctx)?;
        let (tx, rx) = std_mpsc::channel::<Job>();
        let stats = Arc::new(Stats::default());
        let counters = stats.clone();
        std::thread::Builder::new()
            .name("llama-embeddings".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    jobs.extend(rx.try_iter());
                    counters.requests.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                    counters.passes.fetch_add(1, Ordering::Relaxed);
                    serve(&mut embedder, jobs);
                }
            })
            .map_err(|_| EmbedError::Stopped)?;
        Ok(Embeddings { tx, stats })
    }

    /// Queues `texts`; the reply holds one vector per text, in order.
    pub fn embed(&self, texts: Vec<String>, normalize: Normalize) -> PendingEmbeddings {
        self.send(Input::Texts(texts), normalize)
    }

    /// Queues texts tokenized already (with the special tokens [`embed`](Self::embed) adds):
    /// for a caller that counts them, so they are not tokenized twice.
    pub fn embed_tokens(&self, tokenized: Vec<Vec<Token>>, normalize: Normalize) -> PendingEmbeddings {
        self.send(Input::Tokens(tokenized), normalize)
    }

    fn send(&self, input: Input, normalize: Normalize) -> PendingEmbeddings {
        let (reply, rx) = oneshot::channel();
        if let Err(std_mpsc::SendError(job)) = self.tx.send(Job { input, normalize, reply }) {
            let _ = job.reply.send(Err(EmbedError::Stopped));
        }
        PendingEmbeddings(rx)
    }

    /// Requests answered so far and the passes (batches) they took: fewer passes than requests
    /// means concurrent requests shared batches.
    pub fn counts(&self) -> (u64, u64) {
        (self.stats.requests.load(Ordering::Relaxed), self.stats.passes.load(Ordering::Relaxed))
    }
}

/// What a job embeds.
enum Input {
    Texts(Vec<String>),
    Tokens(Vec<Vec<Token>>),
}

/// A job whose texts are tokens now.
struct Ready {
    tokens: Vec<Vec<Token>>,
    normalize: Normalize,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

/// Embeds every job's texts in one call; if that fails (one text too long, say), each job on
/// its own, so one bad request cannot fail the others.
fn serve(embedder: &mut Embedder, jobs: Vec<Job>) {
    // A text that does not tokenize fails its own job only.
    let mut ready = Vec::with_capacity(jobs.len());
    for job in jobs {
        let tokens = match job.input {
            Input::Tokens(tokens) => tokens,
            Input::Texts(texts) => match embedder.tokenize(&texts) {
                Ok(tokens) => tokens,
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                    continue;
                }
            },
        };
        ready.push(Ready { tokens, normalize: job.normalize, reply: job.reply });
    }
    let all: Vec<&[Token]> = ready.iter().flat_map(|r| r.tokens.iter().map(Vec::as_slice)).collect();
    match embedder.embed_tokens(&all, Normalize::Off) {
        Ok(mut vectors) => {
            for job in ready {
                let rest = vectors.split_off(job.tokens.len().min(vectors.len()));
                let mut mine = std::mem::replace(&mut vectors, rest);
                mine.iter_mut().for_each(|v| job.normalize.apply(v));
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(e) if ready.len() == 1 => {
            if let Some(job) = ready.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
        }
        Err(_) => {
            for job in ready {
                let result = embedder.embed_tokens(&job.tokens, job.normalize);
                let _ = job.reply.send(result);
            }
        }
    }
}
