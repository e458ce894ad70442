//! Images and audio in a prompt, through llama.cpp's multimodal library (`mtmd`, feature
//! `mtmd`): a [`Projector`] loaded for a text model turns [`Media`] into embeddings the model
//! reads at the places a prompt's media markers stand.
//!
//! The flow: load the projector next to its model, decode media (encoded image or audio bytes,
//! raw RGB, PCM samples), [`Projector::tokenize`] a prompt whose markers
//! ([`Projector::marker`]) stand for the media into [`Chunks`] (text and media, each with its
//! token and position count), then [`Projector::eval`] them into a [`Context`](crate::Context)
//! sequence and sample as after any prompt.
//!
//! ```no_run
//! use llama::media::Projector;
//! use llama::{AddSpecial, ContextParams, Model, Output, Sampler};
//!
//! let model = Model::load("model.gguf")?;
//! let projector = Projector::load(&model, "mmproj.gguf")?;
//! let image = projector.media_from_file("cat.png")?;
//! let prompt = format!("What is in this picture? {}\n", projector.marker());
//! let chunks = projector.tokenize(&prompt, &[&image], AddSpecial::Yes)?;
//! let mut ctx = model.context(ContextParams::default())?;
//! let next_pos = projector.eval(&mut ctx, &chunks, 0, 0)?;
//! let first = Sampler::greedy().sample(&ctx, Output::Last)?;
//! # let _ = (next_pos, first);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod chunks;
mod projector;

pub use chunks::{Chunk, ChunkKind, Chunks};
pub(crate) use projector::media_entries;
pub use projector::{
    Media, MediaKind, Part, Projector, ProjectorBuilder, DEFAULT_MAX_AUDIO_SECONDS, DEFAULT_MAX_PIXELS,
};

use std::path::PathBuf;

use crate::{DecodeError, LoadError};

/// Why a projector could not be loaded, or media could not be decoded, tokenized or evaluated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The projector file is unreadable or malformed; refused before llama.cpp saw it.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// llama.cpp refused the projector: corrupt, of an unknown projector type, or made for a
    /// model of another width (`reason` names both widths then).
    #[error("llama.cpp could not load projector {}: {}", path.display(), if reason.is_empty() { "corrupt or unsupported projector" } else { reason })]
    Rejected {
        /// The path given.
        path: PathBuf,
        /// What llama.cpp logged.
        reason: String,
    },
    /// A media file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path given.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The projector cannot take this kind of media (an image for an audio-only projector...).
    #[error("this projector does not take {0}")]
    Unsupported(MediaKind),
    /// The bytes are no image or audio file the decoders know (PNG, JPEG, BMP, GIF, TGA, PSD,
    /// HDR, PNM; WAV, MP3, FLAC), or are damaged.
    #[error("cannot decode media: {0}")]
    Undecodable(String),
    /// An image larger than [`ProjectorBuilder::max_pixels`], refused from its header before
    /// its pixels were decoded.
    #[error("image of {width}x{height} pixels exceeds the limit of {max} pixels")]
    TooLarge {
        /// Width read from the header.
        width: u32,
        /// Height read from the header.
        height: u32,
        /// The limit.
        max: u64,
    },
    /// Raw media with inconsistent sizes (RGB bytes not `3 × width × height`, no samples...).
    #[error("invalid media: {0}")]
    Invalid(String),
    /// The prompt's media markers and the media given differ in number.
    #[error("the prompt has {markers} media markers but {media} media were given")]
    MarkerCount {
        /// Markers in the prompt.
        markers: usize,
        /// Media given.
        media: usize,
    },
    /// The prompt contains a NUL byte, which C cannot take.
    #[error("the prompt contains a NUL byte")]
    Nul,
    /// The prompt with its media needs more positions than the context has left.
    #[error("the prompt needs positions up to {need} but the context holds {n_ctx}")]
    ContextFull {
        /// The position after the prompt's last.
        need: usize,
        /// The context's size.
        n_ctx: usize,
    },
    /// llama.cpp failed while preparing or encoding media; `reason` is what it logged or threw.
    #[error("{stage} failed: {reason}")]
    Failed {
        /// `tokenizing`, `encoding` or `decoding the media's embeddings`.
        stage: &'static str,
        /// What llama.cpp logged or threw.
        reason: String,
    },
    /// Decoding a text chunk failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}
