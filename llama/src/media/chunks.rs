//! A prompt tokenized with its media: [`Chunks`] of text tokens and media embeddings.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::Token;

/// What a [`Chunk`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChunkKind {
    /// Text tokens.
    Text,
    /// One image (or one slice of it, for projectors that tile large images).
    Image,
    /// One audio clip (or a window of it).
    Audio,
}

/// A prompt tokenized with its media by [`Projector::tokenize`](super::Projector::tokenize): text
/// and media chunks in prompt order.
///
/// Owns the media's preprocessed pixels or samples until [`Projector::eval`](super::Projector::eval)
/// encodes them.
pub struct Chunks {
    ptr: NonNull<llama_sys::mtmd_input_chunks>,
    /// The address of the projector that tokenized them: their preprocessed media fit only its
    /// encoder.
    owner: usize,
}

// SAFETY: a chunk list is plain data (token vectors, preprocessed f32 images/spectrograms and
// id strings) with no thread affinity and no interior mutability after `mtmd_tokenize` filled
// it; mtmd only reads it when encoding.
unsafe impl Send for Chunks {}
// SAFETY: see `Send`: every method reads only.
unsafe impl Sync for Chunks {}

impl Drop for Chunks {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `mtmd_input_chunks_init` and this is its only owner.
        unsafe { llama_sys::mtmd_input_chunks_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Chunks {
    /// Takes ownership of a list from `mtmd_input_chunks_init`; `None` for null.
    pub(super) fn from_raw(ptr: *mut llama_sys::mtmd_input_chunks, owner: usize) -> Option<Chunks> {
        NonNull::new(ptr).map(|ptr| Chunks { ptr, owner })
    }

    pub(super) fn owner(&self) -> usize {
        self.owner
    }

    /// A list with no chunks (for tests of code that holds one).
    #[cfg(test)]
    pub(crate) fn empty() -> Option<Chunks> {
        // SAFETY: allocates an empty list, owned by the result.
        Chunks::from_raw(unsafe { llama_sys::mtmd_input_chunks_init() }, 0)
    }

    pub(super) fn as_ptr(&self) -> *mut llama_sys::mtmd_input_chunks {
        self.ptr.as_ptr()
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        // SAFETY: the list is alive; a getter.
        unsafe { llama_sys::mtmd_input_chunks_size(self.ptr.as_ptr()) }
    }

    /// Whether there are no chunks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunk at `index`.
    pub fn get(&self, index: usize) -> Option<Chunk<'_>> {
        if index >= self.len() {
            return None;
        }
        // SAFETY: the list is alive and `index` is below its size.
        let ptr = unsafe { llama_sys::mtmd_input_chunks_get(self.ptr.as_ptr(), index) };
        NonNull::new(ptr.cast_mut()).map(|ptr| Chunk { ptr, _chunks: PhantomData })
    }

    /// The chunks in prompt order.
    pub fn iter(&self) -> impl Iterator<Item = Chunk<'_>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Tokens (text tokens and media embeddings) the whole prompt puts in the KV cache.
    pub fn n_tokens(&self) -> usize {
        self.iter().map(|c| c.n_tokens()).sum()
    }

    /// Positions the whole prompt takes: [`n_tokens`](Self::n_tokens) except for models whose
    /// media span fewer positions than embeddings (M-RoPE).
    pub fn n_pos(&self) -> usize {
        self.iter().map(|c| c.n_pos()).sum()
    }
}

/// One chunk of [`Chunks`]: text tokens or one medium's embeddings.
#[derive(Clone, Copy)]
pub struct Chunk<'a> {
    ptr: NonNull<llama_sys::mtmd_input_chunk>,
    _chunks: PhantomData<&'a Chunks>,
}

impl std::fmt::Debug for Chunk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("kind", &self.kind())
            .field("n_tokens", &self.n_tokens())
            .field("n_pos", &self.n_pos())
            .field("media_id", &self.media_id())
            .finish()
    }
}

impl<'a> Chunk<'a> {
    pub(super) fn as_ptr(&self) -> *const llama_sys::mtmd_input_chunk {
        self.ptr.as_ptr()
    }

    /// Text, image or audio.
    pub fn kind(&self) -> ChunkKind {
        // SAFETY: the chunk is alive for 'a (borrowed from its list); a getter.
        match unsafe { llama_sys::mtmd_input_chunk_get_type(self.ptr.as_ptr()) } {
            llama_sys::MTMD_INPUT_CHUNK_TYPE_IMAGE => ChunkKind::Image,
            llama_sys::MTMD_INPUT_CHUNK_TYPE_AUDIO => ChunkKind::Audio,
            _ => ChunkKind::Text,
        }
    }

    /// Text tokens, or the embeddings a medium becomes.
    pub fn n_tokens(&self) -> usize {
        // SAFETY: as in `kind`.
        unsafe { llama_sys::mtmd_input_chunk_get_n_tokens(self.ptr.as_ptr()) }
    }

    /// Positions the chunk takes in its sequence.
    pub fn n_pos(&self) -> usize {
        // SAFETY: as in `kind`.
        usize::try_from(unsafe { llama_sys::mtmd_input_chunk_get_n_pos(self.ptr.as_ptr()) }).unwrap_or(0)
    }

    /// A text chunk's tokens; `None` for media.
    pub fn tokens(&self) -> Option<&'a [Token]> {
        if self.kind() != ChunkKind::Text {
            return None;
        }
        let mut n = 0usize;
        // SAFETY: as in `kind`; for a text chunk mtmd returns its token array and length.
        let ptr = unsafe { llama_sys::mtmd_input_chunk_get_tokens_text(self.ptr.as_ptr(), &mut n) };
        if ptr.is_null() || n == 0 {
            return Some(&[]);
        }
        // SAFETY: `ptr` points at `n` tokens owned by the chunk, alive for 'a; `Token` is a
        // `repr(transparent)` `i32`, as `llama_token` is.
        Some(unsafe { std::slice::from_raw_parts(ptr.cast::<Token>(), n) })
    }

    /// A media chunk's id: the hex SHA-256 of the bytes the medium was decoded from (see
    /// [`Media::id`](super::Media::id)); `None` for text.
    pub fn media_id(&self) -> Option<&'a str> {
        // SAFETY: as in `kind`; null for text, else a NUL-terminated string owned by the chunk.
        let ptr = unsafe { llama_sys::mtmd_input_chunk_get_id(self.ptr.as_ptr()) };
        // SAFETY: non-null means a valid C string alive as long as the chunk.
        (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) }.to_str().ok()).flatten()
    }
}
