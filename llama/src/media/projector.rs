//! [`Projector`]: a multimodal projector loaded for a text model, and the [`Media`] it takes.

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::{ChunkKind, Chunks, MediaError};
use crate::backend::capture_errors;
use crate::barrier::take_exception;
use crate::{AddSpecial, Context, DecodeError, Model, SpecialSyntax, Token};

/// Images larger than this many pixels are refused from their header by default (a 32-megapixel
/// image is 96 MiB of RGB before the projector resizes it); see [`ProjectorBuilder::max_pixels`].
pub const DEFAULT_MAX_PIXELS: u64 = 1 << 25;

/// Audio longer than this many seconds is refused by default (10 minutes: 38 MB of samples at
/// 16 kHz); see [`ProjectorBuilder::max_audio_seconds`].
pub const DEFAULT_MAX_AUDIO_SECONDS: u32 = 600;

/// The most tokens an image may be asked to become (`ProjectorBuilder::image_tokens`).
const MAX_IMAGE_TOKENS: u32 = 1 << 16;

/// Image or audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MediaKind {
    /// An image (RGB pixels).
    Image,
    /// An audio clip (mono PCM at the projector's sample rate).
    Audio,
}

impl std::fmt::Display for MediaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MediaKind::Image => "images",
            MediaKind::Audio => "audio",
        })
    }
}

/// Options for loading a [`Projector`]; from [`Projector::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `load` is called"]
pub struct ProjectorBuilder {
    path: PathBuf,
    use_gpu: bool,
    n_threads: Option<usize>,
    image_min_tokens: Option<u32>,
    image_max_tokens: Option<u32>,
    max_pixels: u64,
    max_audio_seconds: u32,
}

impl ProjectorBuilder {
    /// Runs the projector on the GPU when one is built in (default `true`).
    pub fn use_gpu(mut self, on: bool) -> Self {
        self.use_gpu = on;
        self
    }

    /// CPU threads for encoding media (default: the machine's available parallelism).
    pub fn n_threads(mut self, n: usize) -> Self {
        self.n_threads = Some(n.max(1));
        self
    }

    /// Bounds on the tokens one image becomes, for projectors with dynamic resolution (default:
    /// the projector's own).
    pub fn image_tokens(mut self, min: Option<u32>, max: Option<u32>) -> Self {
        self.image_min_tokens = min;
        self.image_max_tokens = max;
        self
    }

    /// The largest image, in pixels, that [`Projector::media_from_bytes`] decodes; larger ones
    /// are refused from their header (default [`DEFAULT_MAX_PIXELS`]).
    pub fn max_pixels(mut self, max: u64) -> Self {
        self.max_pixels = max;
        self
    }

    /// The longest audio clip, in seconds, that [`Projector::media_from_bytes`] decodes: WAV and
    /// FLAC files are refused from their header, MP3 after decoding (default
    /// [`DEFAULT_MAX_AUDIO_SECONDS`]).
    pub fn max_audio_seconds(mut self, max: u32) -> Self {
        self.max_audio_seconds = max;
        self
    }

    /// Loads the projector for `model`. The file is checked as a GGUF first; llama.cpp then
    /// refuses a projector made for a model of another width, naming both.
    pub fn load(self, model: &Model) -> Result<Projector, MediaError> {
        crate::model::projector_kinds(&self.path)?;
        crate::backend::ensure_init();
        let c_path = CString::new(self.path.as_os_str().as_encoded_bytes())
            .map_err(|_| MediaError::Load(crate::LoadError::InvalidPath))?;
        // SAFETY: returns a struct of plain values and static strings.
        let mut params = unsafe { llama_sys::mtmd_context_params_default() };
        params.use_gpu = self.use_gpu;
        params.print_timings = false;
        params.warmup = false;
        let threads = self.n_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        params.n_threads = i32::try_from(threads).unwrap_or(i32::MAX);
        // Capped: clip multiplies the count by the patch area in `int`.
        let tokens = |n: Option<u32>| n.map_or(-1, |n| i32::try_from(n.min(MAX_IMAGE_TOKENS)).unwrap_or(-1));
        params.image_min_tokens = tokens(self.image_min_tokens);
        params.image_max_tokens = tokens(self.image_max_tokens);
        // SAFETY: the path is a valid C string, the model is alive (and kept alive by the clone
        // stored in the projector), and the params hold no callbacks.
        let (ptr, logged) = capture_errors(|| unsafe {
            llama_sys::llama_rs_mtmd_init_from_file(c_path.as_ptr(), model.as_ptr(), params)
        });
        let Some(ptr) = NonNull::new(ptr) else {
            let reason = take_exception().unwrap_or(logged);
            return Err(MediaError::Rejected { path: self.path, reason });
        };
        let handle = Handle(ptr);
        // SAFETY: the projector is alive; getters; the marker is a C string owned by it.
        let (vision, audio, rate, marker) = unsafe {
            (
                llama_sys::mtmd_support_vision(ptr.as_ptr()),
                llama_sys::mtmd_support_audio(ptr.as_ptr()),
                llama_sys::mtmd_get_audio_sample_rate(ptr.as_ptr()),
                CStr::from_ptr(llama_sys::mtmd_get_marker(ptr.as_ptr())).to_string_lossy().into_owned(),
            )
        };
        Ok(Projector {
            handle,
            encoder: Mutex::new(()),
            vision,
            audio_rate: if audio { u32::try_from(rate).ok().filter(|&r| r > 0) } else { None },
            marker,
            max_pixels: self.max_pixels,
            max_audio_seconds: self.max_audio_seconds,
            model: model.clone(),
        })
    }
}

struct Handle(NonNull<llama_sys::mtmd_context>);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `mtmd_init_from_file` and this is its only owner.
        unsafe { llama_sys::mtmd_free(self.0.as_ptr()) }
    }
}

/// A multimodal projector (an `mmproj` GGUF) loaded for a text [`Model`]: it turns images and
/// audio into embeddings that model reads. Keeps its model alive.
///
/// `Send` and `Sync`: decoding media and tokenizing may run on many threads at once (mtmd
/// documents both as thread-safe); evaluating runs the projector's encoder, one caller at a
/// time (a lock inside).
///
/// ```no_run
/// let model = llama::Model::load("model.gguf")?;
/// let projector = llama::media::Projector::builder("mmproj.gguf").max_pixels(4096 * 4096).load(&model)?;
/// println!("images: {}, audio: {}", projector.takes_images(), projector.takes_audio());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Projector {
    handle: Handle,
    /// Held while the encoder runs: it writes the projector's buffers.
    encoder: Mutex<()>,
    vision: bool,
    audio_rate: Option<u32>,
    marker: String,
    max_pixels: u64,
    max_audio_seconds: u32,
    // Declared last: dropped after the projector, which reads the model's vocabulary.
    model: Model,
}

// SAFETY: an mtmd context has no thread affinity. The calls made without a lock are those mtmd
// documents as thread-safe on a shared context (`mtmd_tokenize*`, which llama-server also runs on
// its HTTP threads while its main loop encodes; `mtmd_helper_bitmap_init_from_buf`) and getters
// of values fixed at load; the encoder, which writes the context's buffers, runs only under the
// `encoder` lock.
unsafe impl Send for Projector {}
// SAFETY: see `Send`.
unsafe impl Sync for Projector {}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("images", &self.vision)
            .field("audio_sample_rate", &self.audio_rate)
            .field("marker", &self.marker)
            .finish()
    }
}

impl Projector {
    /// Loads a projector for `model` with default options.
    pub fn load(model: &Model, path: impl AsRef<Path>) -> Result<Projector, MediaError> {
        Projector::builder(path).load(model)
    }

    /// Which media the projector file at `path` takes, read from its metadata without loading
    /// it: (images, audio). Refuses files that are no projector.
    pub fn probe(path: impl AsRef<Path>) -> Result<(bool, bool), MediaError> {
        Ok(crate::model::projector_kinds(path.as_ref())?)
    }

    /// Starts a [`ProjectorBuilder`] for `path`.
    pub fn builder(path: impl AsRef<Path>) -> ProjectorBuilder {
        ProjectorBuilder {
            path: path.as_ref().to_path_buf(),
            use_gpu: true,
            n_threads: None,
            image_min_tokens: None,
            image_max_tokens: None,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_audio_seconds: DEFAULT_MAX_AUDIO_SECONDS,
        }
    }

    fn as_ptr(&self) -> *mut llama_sys::mtmd_context {
        self.handle.0.as_ptr()
    }

    /// The text model this projector was loaded for.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Whether it takes images.
    pub fn takes_images(&self) -> bool {
        self.vision
    }

    /// Whether it takes audio.
    pub fn takes_audio(&self) -> bool {
        self.audio_rate.is_some()
    }

    /// The sample rate audio is resampled to (Hz), for [`Media::pcm`]; `None` without audio.
    pub fn audio_sample_rate(&self) -> Option<u32> {
        self.audio_rate
    }

    /// Whether it takes `kind`.
    pub fn takes(&self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Image => self.takes_images(),
            MediaKind::Audio => self.takes_audio(),
        }
    }

    /// The text that stands for one medium in a prompt given to [`tokenize`](Self::tokenize).
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Decodes an image file (PNG, JPEG, BMP, GIF, TGA, PSD, HDR, PNM) or audio file (WAV, MP3,
    /// FLAC; resampled to [`audio_sample_rate`](Self::audio_sample_rate)) held in memory. Its
    /// [`id`](Media::id) is the SHA-256 of `bytes`.
    pub fn media_from_bytes(&self, bytes: &[u8]) -> Result<Media, MediaError> {
        let kind = sniff(bytes)?;
        if !self.takes(kind) {
            return Err(MediaError::Unsupported(kind));
        }
        if kind == MediaKind::Audio {
            if let Some(seconds) = declared_seconds(bytes).filter(|&s| s > f64::from(self.max_audio_seconds)) {
                return Err(MediaError::Invalid(format!(
                    "audio of {seconds:.0} s is longer than the limit of {} s",
                    self.max_audio_seconds
                )));
            }
        }
        if kind == MediaKind::Image {
            let (mut width, mut height) = (0i32, 0i32);
            // SAFETY: `bytes` is valid for its length; the callee only reads the header.
            let known = unsafe { llama_sys::llama_rs_image_info(bytes.as_ptr(), bytes.len(), &mut width, &mut height) };
            if known != 1 {
                return Err(MediaError::Undecodable("not an image or audio file of a known format".into()));
            }
            let (width, height) = (u32::try_from(width).unwrap_or(0), u32::try_from(height).unwrap_or(0));
            if u64::from(width) * u64::from(height) > self.max_pixels {
                return Err(MediaError::TooLarge { width, height, max: self.max_pixels });
            }
        }
        // SAFETY: the projector is alive; `bytes` is valid for its length and only read.
        let (ptr, logged) = capture_errors(|| unsafe {
            llama_sys::llama_rs_mtmd_bitmap_from_buf(self.as_ptr(), bytes.as_ptr(), bytes.len())
        });
        let Some(media) = Media::from_raw(ptr) else {
            let reason = take_exception().unwrap_or(logged);
            return Err(MediaError::Undecodable(if reason.is_empty() {
                "damaged or unsupported file".into()
            } else {
                reason
            }));
        };
        if media.kind() == MediaKind::Audio {
            let rate = f64::from(self.audio_rate.unwrap_or(16_000));
            if media.n_samples() as f64 > rate * f64::from(self.max_audio_seconds) {
                return Err(MediaError::Invalid(format!(
                    "audio longer than the limit of {} s",
                    self.max_audio_seconds
                )));
            }
            self.check_length(&media)?;
        }
        Ok(media)
    }

    /// Audio shorter than a tenth of a second is refused: some projectors' preprocessors assert
    /// on fewer than two frames (320 samples at 16 kHz).
    fn check_length(&self, media: &Media) -> Result<(), MediaError> {
        let min = usize::try_from(self.audio_rate.unwrap_or(16_000) / 10).unwrap_or(MIN_SAMPLES).max(MIN_SAMPLES);
        if media.kind() == MediaKind::Audio && media.n_samples() < min {
            return Err(MediaError::Invalid(format!(
                "audio of {} samples is too short (at least {min}, a tenth of a second)",
                media.n_samples()
            )));
        }
        Ok(())
    }

    /// [`media_from_bytes`](Self::media_from_bytes) of a file's contents.
    pub fn media_from_file(&self, path: impl AsRef<Path>) -> Result<Media, MediaError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| MediaError::Io { path: path.to_path_buf(), source })?;
        self.media_from_bytes(&bytes)
    }

    /// Tokenizes `prompt`, in which each [`marker`](Self::marker) stands for the next of
    /// `media`, into text and media [`Chunks`]. Special-token text in the prompt is parsed as
    /// such (a chat template's output); [`tokenize_parts`](Self::tokenize_parts) keeps it
    /// plain where the text comes from a user.
    pub fn tokenize(&self, prompt: &str, media: &[&Media], add_special: AddSpecial) -> Result<Chunks, MediaError> {
        let markers = prompt.matches(self.marker.as_str()).count();
        if markers != media.len() {
            return Err(MediaError::MarkerCount { markers, media: media.len() });
        }
        let mut parts = Vec::with_capacity(2 * media.len() + 1);
        for (i, text) in prompt.split(self.marker.as_str()).enumerate() {
            parts.push(Part::Text(text, SpecialSyntax::Tokens));
            if let Some(m) = media.get(i) {
                parts.push(Part::Media(m));
            }
        }
        self.tokenize_parts(&parts, add_special)
    }

    /// Tokenizes text and media in order, each text part with its own [`SpecialSyntax`]: a
    /// chat template's text may produce control tokens while a user's never does.
    pub fn tokenize_parts(&self, parts: &[Part<'_>], add_special: AddSpecial) -> Result<Chunks, MediaError> {
        if let Some(kind) = parts.iter().filter_map(|p| p.media()).map(Media::kind).find(|&k| !self.takes(k)) {
            return Err(MediaError::Unsupported(kind));
        }
        for media in parts.iter().filter_map(|p| p.media()) {
            self.check_length(media)?;
        }
        let texts = parts
            .iter()
            .map(|p| match p {
                Part::Text(text, _) => CString::new(*text).map(Some).map_err(|_| MediaError::Nul),
                Part::Media(_) => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let inputs: Vec<Option<llama_sys::mtmd_input_text>> = parts
            .iter()
            .zip(&texts)
            .map(|(part, c)| match (part, c) {
                (Part::Text(text, syntax), Some(c)) => Some(llama_sys::mtmd_input_text {
                    text: c.as_ptr(),
                    text_len: text.len(),
                    add_special: false,
                    parse_special: *syntax == SpecialSyntax::Tokens,
                }),
                _ => None,
            })
            .collect();
        let raw: Vec<llama_sys::mtmd_input_part> = parts
            .iter()
            .zip(&inputs)
            .map(|(part, input)| llama_sys::mtmd_input_part {
                text: input.as_ref().map_or(std::ptr::null(), |t| t as *const _),
                bitmap: part.media().map_or(std::ptr::null(), |m| m.ptr.as_ptr().cast_const()),
            })
            .collect();
        let pointers: Vec<*const llama_sys::mtmd_input_part> = raw.iter().map(|p| p as *const _).collect();
        // SAFETY: allocates an empty list (freed by `Chunks`' drop).
        let chunks = Chunks::from_raw(unsafe { llama_sys::mtmd_input_chunks_init() }, self.handle.0.as_ptr() as usize)
            .ok_or_else(|| MediaError::Failed { stage: "tokenizing", reason: "out of memory".into() })?;
        // SAFETY: the projector, the list and every bitmap are alive; each part points at either
        // a live `mtmd_input_text` (whose C string of `text_len` bytes is alive) or a bitmap;
        // `pointers` holds `len` valid pointers into `raw`.
        let (rc, logged) = capture_errors(|| unsafe {
            llama_sys::llama_rs_mtmd_tokenize_from_parts(
                self.as_ptr(),
                chunks.as_ptr(),
                pointers.as_ptr(),
                pointers.len(),
                add_special == AddSpecial::Yes,
            )
        });
        match rc {
            0 => Ok(chunks),
            i32::MIN => Err(MediaError::Failed { stage: "tokenizing", reason: take_exception().unwrap_or(logged) }),
            _ => Err(MediaError::Failed { stage: "tokenizing", reason: logged }),
        }
    }

    /// Evaluates `chunks` into sequence `seq` of `ctx` from position `start`: text through
    /// [`Context::decode_tokens`], media through the projector's encoder, their embeddings
    /// decoded at the positions they take. Returns the position after the prompt; the logits
    /// of its last token are ready to sample when the prompt ends with text.
    ///
    /// The context must run this projector's model. A position holding media shows in
    /// [`Context::cached_tokens`] as a negative placeholder token derived from the medium's id,
    /// so prefix reuse matches a cached image only against the same image.
    pub fn eval(&self, ctx: &mut Context, chunks: &Chunks, start: usize, seq: usize) -> Result<usize, MediaError> {
        if !Arc::ptr_eq(&ctx.model().handle, &self.model.handle) {
            return Err(MediaError::Invalid("the context runs another model than the projector's".into()));
        }
        if chunks.owner() != self.handle.0.as_ptr() as usize {
            return Err(MediaError::Invalid("the chunks were tokenized by another projector".into()));
        }
        if seq >= ctx.n_seq_max() {
            return Err(DecodeError::InvalidSeqId { seq, n_seq_max: ctx.n_seq_max() }.into());
        }
        let need = start.saturating_add(chunks.n_pos());
        if need > ctx.n_ctx() {
            return Err(MediaError::ContextFull { need, n_ctx: ctx.n_ctx() });
        }
        let mut pos = start;
        for chunk in chunks.iter() {
            if let Some(tokens) = chunk.tokens() {
                if !tokens.is_empty() {
                    ctx.decode_tokens(tokens, pos, seq)?;
                }
                pos += tokens.len();
                continue;
            }
            pos = self.eval_media(ctx, chunk, pos, seq)?;
        }
        Ok(pos)
    }

    /// Whether the model reads media at multi-section positions (M-RoPE: fewer positions than
    /// embeddings).
    pub(crate) fn uses_mrope(&self) -> bool {
        // SAFETY: the projector is alive; a getter.
        unsafe { llama_sys::mtmd_decode_use_mrope(self.as_ptr()) }
    }

    /// One media chunk into sequence `seq` at `pos`; the position after it. The caller checked
    /// that the context runs this projector's model and that `seq` and the positions fit.
    pub(crate) fn eval_media(
        &self,
        ctx: &mut Context,
        chunk: super::Chunk<'_>,
        pos: usize,
        seq: usize,
    ) -> Result<usize, MediaError> {
        // SAFETY: the projector and the chunk are alive; a getter.
        let non_causal = unsafe { llama_sys::mtmd_decode_use_non_causal(self.as_ptr(), chunk.as_ptr()) };
        let room = ctx.n_batch().min(ctx.n_ubatch());
        if non_causal && chunk.n_tokens() > room {
            // Its embeddings attend to each other: they must be one micro-batch (llama.cpp
            // asserts it).
            return Err(MediaError::Invalid(format!(
                "this medium is {} embeddings read at once, more than the context's batch of {room}: \
                 raise n_batch and n_ubatch",
                chunk.n_tokens()
            )));
        }
        // Both fit in i32: the caller checked them against n_ctx and n_seq_max.
        let (p0, s) = (i32::try_from(pos).unwrap_or(i32::MAX), i32::try_from(seq).unwrap_or(i32::MAX));
        let n_batch = i32::try_from(ctx.n_batch().max(1)).unwrap_or(i32::MAX);
        let mut next = p0;
        let _encoding = self.encoder.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the projector is alive and its encoder lock held; the context is alive and
        // exclusively borrowed; the chunk is a media chunk of a live list; the position and
        // sequence were checked against the context.
        let (rc, logged) = capture_errors(|| unsafe {
            llama_sys::llama_rs_mtmd_eval_media(self.as_ptr(), ctx.as_ptr(), chunk.as_ptr(), p0, s, n_batch, &mut next)
        });
        let ok = rc == 0 && next >= p0;
        let entries = ok.then(|| media_entries(chunk.media_id(), usize::try_from(next - p0).unwrap_or(0))).flatten();
        ctx.media_decoded(s, p0, ok.then_some(entries.as_deref()).flatten());
        if !ok {
            let reason = if rc == i32::MIN { take_exception().unwrap_or(logged) } else { logged };
            let stage = if chunk.kind() == ChunkKind::Audio { "encoding audio" } else { "encoding an image" };
            return Err(MediaError::Failed { stage, reason });
        }
        Ok(usize::try_from(next).unwrap_or(pos))
    }
}

/// What the ledger records for a medium's positions: negative values (never a vocabulary id)
/// cycling through the 31-bit words of its SHA-256, so a cached prefix matches only the same
/// medium. `None` without an id (the sequence then becomes unknown to the ledger).
pub(crate) fn media_entries(id: Option<&str>, n_pos: usize) -> Option<Vec<Token>> {
    let hex = id?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16);
    let mut words = [0i32; 8];
    for (w, chunk) in words.iter_mut().zip(hex.chunks(8)) {
        let mut v = 0u32;
        for &c in chunk {
            v = (v << 4) | digit(c)?;
        }
        *w = i32::from_ne_bytes((v | 0x8000_0000).to_ne_bytes());
    }
    Some((0..n_pos).map(|i| Token(words[i % 8])).collect())
}

/// One piece of a prompt for [`Projector::tokenize_parts`].
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// Text, with special-token syntax parsed or kept plain.
    Text(&'a str, SpecialSyntax),
    /// An image or audio clip.
    Media(&'a Media),
}

impl<'a> Part<'a> {
    fn media(&self) -> Option<&'a Media> {
        match *self {
            Part::Media(m) => Some(m),
            Part::Text(..) => None,
        }
    }
}

/// Fewer samples than this are refused (mtmd's audio preprocessor asserts on fewer than two).
const MIN_SAMPLES: usize = 2;

/// The duration a WAV or FLAC header declares, in seconds; `None` for other formats (MP3 is
/// measured by decoding) or headers this reader does not follow. miniaudio allocates what the
/// header declares before it reads a sample.
fn declared_seconds(bytes: &[u8]) -> Option<f64> {
    let u32_at = |i: usize| bytes.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if bytes.starts_with(b"fLaC") {
        // STREAMINFO, the first metadata block: 20 bits of rate, then 36 bits of total samples.
        let b = bytes.get(8 + 10..8 + 18)?;
        let rate = (u32::from(b[0]) << 12) | (u32::from(b[1]) << 4) | (u32::from(b[2]) >> 4);
        let total = (u64::from(b[3] & 0x0F) << 32) | u64::from(u32::from_be_bytes([b[4], b[5], b[6], b[7]]));
        return (rate > 0).then(|| total as f64 / f64::from(rate));
    }
    if !(bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WAVE")) {
        return None;
    }
    let (mut at, mut byte_rate) = (12usize, None);
    while let (Some(id), Some(size)) = (bytes.get(at..at + 4), u32_at(at + 4)) {
        match id {
            b"fmt " => byte_rate = u32_at(at + 16),
            b"data" => return byte_rate.filter(|&r| r > 0).map(|r| f64::from(size) / f64::from(r)),
            _ => {}
        }
        at = at.checked_add(8)?.checked_add(usize::try_from(size).ok()?.next_multiple_of(2))?;
    }
    None
}

/// What a buffer holds, from its magic bytes as mtmd's helper tells them: audio, else an image.
fn sniff(bytes: &[u8]) -> Result<MediaKind, MediaError> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
        return Err(MediaError::Undecodable(
            "WebP is not supported (mtmd decodes it only through ffmpeg); send PNG or JPEG".into(),
        ));
    }
    let wav = bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WAVE";
    let mp3 = starts(b"ID3") || (bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0);
    let flac = starts(b"fLaC");
    Ok(if wav || mp3 || flac { MediaKind::Audio } else { MediaKind::Image })
}

/// An image or audio clip decoded for a [`Projector`]: RGB pixels or mono `f32` samples, named
/// by an [`id`](Self::id).
///
/// From encoded files with [`Projector::media_from_bytes`] / [`Projector::media_from_file`],
/// from raw data with [`Media::rgb`] and [`Media::pcm`].
pub struct Media {
    ptr: NonNull<llama_sys::mtmd_bitmap>,
}

// SAFETY: a bitmap is plain data (pixel or sample bytes, an id string) with no thread affinity,
// never changed after construction here; mtmd only reads it.
unsafe impl Send for Media {}
// SAFETY: see `Send`: every method reads only.
unsafe impl Sync for Media {}

impl Drop for Media {
    fn drop(&mut self) {
        // SAFETY: the pointer came from an `mtmd_bitmap_init*` and this is its only owner.
        unsafe { llama_sys::mtmd_bitmap_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Media");
        d.field("kind", &self.kind());
        match self.kind() {
            MediaKind::Image => d.field("width", &self.width()).field("height", &self.height()),
            MediaKind::Audio => d.field("n_samples", &self.n_samples()),
        };
        d.field("id", &self.id()).finish()
    }
}

impl Media {
    fn from_raw(ptr: *mut llama_sys::mtmd_bitmap) -> Option<Media> {
        NonNull::new(ptr).map(|ptr| Media { ptr })
    }

    /// An image from `3 × width × height` bytes of RGB, row by row. Its id is the SHA-256 of
    /// the size and the pixels.
    ///
    /// ```no_run
    /// let gray = llama::media::Media::rgb(2, 2, &[128; 12])?;
    /// # Ok::<(), llama::media::MediaError>(())
    /// ```
    pub fn rgb(width: u32, height: u32, pixels: &[u8]) -> Result<Media, MediaError> {
        let expected = u64::from(width) * u64::from(height) * 3;
        if width == 0 || height == 0 || u64::try_from(pixels.len()).ok() != Some(expected) {
            return Err(MediaError::Invalid(format!(
                "{} bytes of RGB for a {width}x{height} image (expected {expected})",
                pixels.len()
            )));
        }
        // SAFETY: `pixels` holds exactly nx * ny * 3 bytes, which the callee copies.
        let ptr = unsafe { llama_sys::llama_rs_mtmd_bitmap_init(width, height, pixels.as_ptr()) };
        let media = Media::from_raw(ptr).ok_or_else(|| MediaError::Invalid(take_exception().unwrap_or_default()))?;
        let mut hash = Sha256::new();
        hash.update(width.to_le_bytes());
        hash.update(height.to_le_bytes());
        hash.update(pixels);
        media.set_id(hash)
    }

    /// An audio clip from mono samples in `[-1, 1]` at the projector's
    /// [`audio_sample_rate`](Projector::audio_sample_rate). Its id is the SHA-256 of the samples.
    pub fn pcm(samples: &[f32]) -> Result<Media, MediaError> {
        if samples.len() < MIN_SAMPLES {
            return Err(MediaError::Invalid(format!("audio of {} samples is too short", samples.len())));
        }
        // SAFETY: `samples` holds `len` floats, which the callee copies.
        let ptr = unsafe { llama_sys::llama_rs_mtmd_bitmap_init_from_audio(samples.len(), samples.as_ptr()) };
        let media = Media::from_raw(ptr).ok_or_else(|| MediaError::Invalid(take_exception().unwrap_or_default()))?;
        let mut hash = Sha256::new();
        for s in samples {
            hash.update(s.to_le_bytes());
        }
        media.set_id(hash)
    }

    fn set_id(self, hash: Sha256) -> Result<Media, MediaError> {
        let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let id = CString::new(hex).map_err(|_| MediaError::Nul)?;
        // SAFETY: the bitmap is alive and owned here; the id is a valid C string the callee copies.
        if unsafe { llama_sys::llama_rs_mtmd_bitmap_set_id(self.ptr.as_ptr(), id.as_ptr()) } != 0 {
            return Err(MediaError::Invalid(take_exception().unwrap_or_default()));
        }
        Ok(self)
    }

    /// Image or audio.
    pub fn kind(&self) -> MediaKind {
        // SAFETY: the bitmap is alive; a getter.
        if unsafe { llama_sys::mtmd_bitmap_is_audio(self.ptr.as_ptr()) } {
            MediaKind::Audio
        } else {
            MediaKind::Image
        }
    }

    /// An image's width in pixels (0 for audio).
    pub fn width(&self) -> u32 {
        if self.kind() == MediaKind::Audio {
            return 0;
        }
        // SAFETY: as in `kind`.
        unsafe { llama_sys::mtmd_bitmap_get_nx(self.ptr.as_ptr()) }
    }

    /// An image's height in pixels (0 for audio).
    pub fn height(&self) -> u32 {
        if self.kind() == MediaKind::Audio {
            return 0;
        }
        // SAFETY: as in `kind`.
        unsafe { llama_sys::mtmd_bitmap_get_ny(self.ptr.as_ptr()) }
    }

    /// An audio clip's samples (0 for images).
    pub fn n_samples(&self) -> usize {
        if self.kind() == MediaKind::Image {
            return 0;
        }
        // SAFETY: as in `kind`.
        unsafe { llama_sys::mtmd_bitmap_get_n_bytes(self.ptr.as_ptr()) / std::mem::size_of::<f32>() }
    }

    /// The hex SHA-256 that names this medium: of the encoded file for media decoded from
    /// bytes, of the size and pixels or the samples for raw media. Equal ids mean equal media
    /// for prefix reuse.
    pub fn id(&self) -> &str {
        // SAFETY: the bitmap is alive; null or a C string it owns, alive while `self` is.
        let ptr: *const c_char = unsafe { llama_sys::mtmd_bitmap_get_id(self.ptr.as_ptr()) };
        if ptr.is_null() {
            return "";
        }
        // SAFETY: non-null: a valid NUL-terminated string, as above.
        unsafe { CStr::from_ptr(ptr) }.to_str().unwrap_or("")
    }
}
