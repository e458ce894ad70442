//! Sentence embeddings: [`Embedder`] turns texts into vectors with the model's pooling.

use crate::error::{ContextError, DecodeError, TokenizeError};
use crate::{AddSpecial, Batch, Context, ContextParams, Logits, Model, PoolingType, Token};

/// Why texts could not be embedded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The embedding context could not be created.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// A text could not be tokenized.
    #[error(transparent)]
    Tokenize(#[from] TokenizeError),
    /// A text is longer than the context.
    #[error("text {index} has {tokens} tokens, more than the embedding context's {n_ctx}")]
    TooLong {
        /// Which text.
        index: usize,
        /// Its length in tokens.
        tokens: usize,
        /// The context size.
        n_ctx: usize,
    },
    /// Decoding failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The model produced no pooled embedding (pooling `None` or unsupported).
    #[error("the model produced no pooled embedding for text {0}")]
    NoEmbedding(usize),
    /// The embedding thread of an [`engine::Embeddings`](crate::engine::Embeddings) has stopped.
    #[error("the embedding thread has stopped")]
    Stopped,
}

/// Embeds texts: one pooled vector per text, optionally L2-normalised.
///
/// ```no_run
/// use llama::{Embedder, Model};
/// let model = Model::load("model.gguf")?;
/// let mut embedder = Embedder::new(&model, 512)?;
/// let v = embedder.embed(&["a cat", "a kitten"], llama::Normalize::Unit)?;
/// let cosine: f32 = v[0].iter().zip(&v[1]).map(|(a, b)| a * b).sum();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Embedder {
    ctx: Context,
    batch: Batch,
    n_seq: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("n_ctx", &self.ctx.n_ctx()).field("n_seq", &self.n_seq).finish()
    }
}

impl Embedder {
    /// An embedder whose texts may hold up to `n_ctx` tokens in total per batch, with mean
    /// pooling unless the model defines its own.
    pub fn new(model: &Model, n_ctx: usize) -> Result<Embedder, EmbedError> {
        Embedder::with_pooling(model, n_ctx, PoolingType::Mean)
    }

    /// As [`new`](Self::new), with an explicit pooling (not [`PoolingType::None`]).
    pub fn with_pooling(model: &Model, n_ctx: usize, pooling: PoolingType) -> Result<Embedder, EmbedError> {
        if pooling == PoolingType::None {
            return Err(ContextError::InvalidParam("an Embedder needs a pooling other than None").into());
        }
        let n_seq = 16;
        let params = ContextParams::default()
            .n_ctx(n_ctx)
            .n_batch(n_ctx)
            .n_ubatch(n_ctx)
            .n_seq_max(n_seq)
            .kv_unified(true)
            .embeddings(true)
            .pooling(pooling);
        let ctx = model.context(params)?;
        let batch = Batch::new(ctx.n_batch(), 1);
        Ok(Embedder { ctx, batch, n_seq })
    }

    /// One vector per text, in order; [`Normalize::Unit`] scales each to unit length.
    pub fn embed<S: AsRef<str>>(&mut self, texts: &[S], normalize: Normalize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let tokenized = self.tokenize(texts)?;
        self.embed_tokens(&tokenized, normalize)
    }

    /// Texts as [`embed`](Self::embed) tokenizes them.
    pub(crate) fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<Token>>, EmbedError> {
        let vocab = self.ctx.vocab();
        Ok(texts.iter().map(|t| vocab.tokenize(t.as_ref(), AddSpecial::Yes)).collect::<Result<Vec<_>, _>>()?)
    }

    /// One vector per token sequence, in order: texts tokenized already (with the special
    /// tokens [`embed`](Self::embed) adds), as a caller that also counts them has them.
    pub fn embed_tokens<T: AsRef<[Token]>>(
        &mut self,
        tokenized: &[T],
        normalize: Normalize,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let n_ctx = self.ctx.n_batch();
        let tokenized: Vec<&[Token]> = tokenized.iter().map(AsRef::as_ref).collect();
        if let Some((index, tokens)) = tokenized.iter().enumerate().find(|(_, t)| t.is_empty() || t.len() > n_ctx) {
            return Err(EmbedError::TooLong { index, tokens: tokens.len(), n_ctx });
        }
        let mut out = Vec::with_capacity(tokenized.len());
        let mut i = 0;
        while i < tokenized.len() {
            // Pack as many texts as fit into one batch, one sequence each.
            self.batch.clear();
            let start = i;
            while i < tokenized.len() && i - start < self.n_seq && self.batch.len() + tokenized[i].len() <= n_ctx {
                let seq = i - start;
                for (pos, &t) in tokenized[i].iter().enumerate() {
                    self.batch.add(t, pos, &[seq], Logits::Want).map_err(DecodeError::from)?;
                }
                i += 1;
            }
            self.ctx.clear_kv();
            self.ctx.decode(&self.batch)?;
            for seq in 0..(i - start) {
                let mut v = self.ctx.embeddings_seq(seq).ok_or(EmbedError::NoEmbedding(start + seq))?.to_vec();
                normalize.apply(&mut v);
                out.push(v);
            }
        }
        self.ctx.clear_kv();
        Ok(out)
    }
}

/// Whether embeddings are scaled to unit length (cosine similarity becomes a dot product).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Normalize {
    /// Scale each vector to length 1 (a zero vector stays zero).
    Unit,
    /// Return the model's vectors as they are.
    Off,
}

impl Normalize {
    pub(crate) fn apply(self, v: &mut [f32]) {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if self == Normalize::Unit && norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
