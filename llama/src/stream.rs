//! Generation as a `futures::Stream` (feature `async`). The model runs on its own thread, so
//! an async runtime's workers never block on inference; dropping the stream cancels it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_channel::{mpsc, oneshot};
use futures_core::Stream;

use crate::generate::{FinishReason, GenerateError, GenerateParams, Piece, Timings};
use crate::{Context, Sampler};

/// What a finished [`GenerationStream`] hands back: the context and sampler for reuse, how it
/// ended, and its timings.
#[derive(Debug)]
pub struct StreamOutcome {
    /// The context (its KV cache holds the prompt and reply, ready for prefix reuse).
    pub context: Context,
    /// The sampler.
    pub sampler: Sampler,
    /// Why generation ended (`None` if it failed before starting).
    pub finish: Option<FinishReason>,
    /// Token counts and times.
    pub timings: Timings,
}

/// A generation running on a background thread, yielding pieces as a [`Stream`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use futures::StreamExt;
/// use llama::{GenerateParams, GenerationStream, Model, Sampler};
/// let model = Model::load("model.gguf")?;
/// let ctx = model.context(Default::default())?;
/// let mut stream = GenerationStream::spawn(ctx, Sampler::default(), "Hello", GenerateParams::default());
/// while let Some(piece) = stream.next().await {
///     print!("{}", piece?);
/// }
/// let outcome = stream.finish().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct GenerationStream {
    pieces: mpsc::Receiver<Result<Piece, GenerateError>>,
    outcome: Option<oneshot::Receiver<StreamOutcome>>,
    cancel: Arc<AtomicBool>,
}

impl GenerationStream {
    /// Starts generating `prompt` on a new thread that owns `ctx` and `sampler` until it ends.
    pub fn spawn(mut ctx: Context, mut sampler: Sampler, prompt: impl Into<String>, params: GenerateParams) -> Self {
        let prompt = prompt.into();
        let cancel = Arc::new(AtomicBool::new(false));
        let params = params.cancel(cancel.clone());
        // A small buffer: the model does not run far ahead of a slow consumer.
        let (mut tx, rx) = mpsc::channel(8);
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::spawn(move || {
            let (finish, timings) = match ctx.generate(&prompt, &mut sampler, &params) {
                Ok(mut gen) => {
                    for item in gen.by_ref() {
                        if send_blocking(&mut tx, item).is_err() {
                            break; // the stream was dropped
                        }
                    }
                    (gen.finish_reason(), gen.timings())
                }
                Err(e) => {
                    let _ = send_blocking(&mut tx, Err(e));
                    (None, Timings::default())
                }
            };
            drop(tx);
            let _ = done_tx.send(StreamOutcome { context: ctx, sampler, finish, timings });
        });
        GenerationStream { pieces: rx, outcome: Some(done_rx), cancel }
    }

    /// Asks the generation to stop after the current token.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Stops generating (if still running) and returns the context, sampler and outcome.
    pub async fn finish(mut self) -> Option<StreamOutcome> {
        self.cancel();
        self.pieces.close();
        self.outcome.take()?.await.ok()
    }
}

/// Sends on a bounded channel from a plain thread, waiting while it is full.
fn send_blocking<T>(tx: &mut mpsc::Sender<T>, mut item: T) -> Result<(), ()> {
    loop {
        match tx.try_send(item) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_full() => {
                item = e.into_inner();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            Err(_) => return Err(()),
        }
    }
}

impl Stream for GenerationStream {
    type Item = Result<Piece, GenerateError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.pieces).poll_next(cx)
    }
}

impl Drop for GenerationStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}
