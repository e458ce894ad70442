//! An owned batch of tokens for [`Context::decode`](crate::Context::decode).

use crate::error::BatchError;
use crate::Token;

/// Tokens with their positions, sequence ids and output flags, ready to decode.
///
/// Capacity is fixed at creation; adding past it is an error, not a buffer overflow.
///
/// ```
/// use llama::{Batch, Logits, Token};
/// let mut batch = Batch::new(2, 1);
/// batch.add(Token(1), 0, &[0], Logits::Skip)?;
/// batch.add(Token(2), 1, &[0], Logits::Want)?;
/// assert!(batch.add(Token(3), 2, &[0], Logits::Want).is_err()); // full
/// # Ok::<(), llama::BatchError>(())
/// ```
pub struct Batch {
    // Rust owns every array; `raw()` lends llama.cpp a view of them for one call. Allocating
    // here rather than with llama_batch_init makes an allocation failure an `Err`: the C
    // function does not check malloc's result and writes through it.
    token: Vec<i32>,
    embd: Vec<f32>,
    pos: Vec<i32>,
    n_seq_id: Vec<i32>,
    logits: Vec<i8>,
    /// `n_seq_max` ids per entry, flat; `seq_ptrs[i]` points at entry `i`'s slice. Never
    /// resized after construction, so the pointers stay valid.
    seq_storage: Vec<i32>,
    seq_ptrs: Vec<*mut i32>,
    len: usize,
    capacity: usize,
    n_seq_max: usize,
    /// Row width for embeddings input; 0 for a token batch.
    n_embd: usize,
}

// SAFETY: the batch owns all its arrays; `seq_ptrs` only points into its own `seq_storage`, and
// llama.cpp keeps no reference to them beyond a decode call. Nothing is thread-bound.
unsafe impl Send for Batch {}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("len", &self.len()).field("capacity", &self.capacity).finish()
    }
}

/// Whether a batch entry asks for its output after the decode: logits, or embeddings in an
/// embeddings context. Read them with [`Context::logits`](crate::Context::logits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Logits {
    /// Compute this entry's output (the last prompt token; every verified draft token).
    Want,
    /// Do not: cheaper, and the usual case for prompt tokens.
    Skip,
}

/// Most entries a batch may hold: far beyond any context's batch size, and small enough that the
/// one array touched up front (a pointer per entry) stays at 128 MiB.
pub const MAX_BATCH: usize = 1 << 24;

/// A zero-filled vector of exactly `n` elements, or the number of bytes that could not be had.
fn zeroed<T: Clone + Default>(n: usize) -> Result<Vec<T>, BatchError> {
    let bytes = n.saturating_mul(std::mem::size_of::<T>());
    // Probe first: an impossible size fails here, as an error, without touching memory.
    Vec::<T>::new().try_reserve_exact(n).map_err(|_| BatchError::AllocFailed { bytes })?;
    // Zeroes of plain numbers come from the allocator as untouched pages, so a large batch
    // costs memory only as it fills.
    Ok(vec![T::default(); n])
}

impl Batch {
    /// A batch for up to `capacity` tokens, each in up to `n_seq_max` sequences (both at least
    /// 1; `n_seq_max` at most llama.cpp's sequence limit). Like `Vec::with_capacity`, aborts if
    /// the memory cannot be had; use [`try_new`](Self::try_new) for sizes from untrusted input.
    pub fn new(capacity: usize, n_seq_max: usize) -> Batch {
        Batch::try_new(capacity, n_seq_max)
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(std::alloc::Layout::new::<i32>()))
    }

    /// [`new`](Self::new), but a capacity beyond what llama.cpp can address, or memory that
    /// cannot be had, is an error.
    ///
    /// ```
    /// assert!(llama::Batch::try_new(usize::MAX, 1).is_err());
    /// ```
    pub fn try_new(capacity: usize, n_seq_max: usize) -> Result<Batch, BatchError> {
        Batch::alloc(capacity, 0, n_seq_max)
    }

    /// A batch of embedding rows of width `n_embd` instead of token ids (e.g. projected image
    /// features), for up to `capacity` rows. Sizes whose product cannot be allocated are an
    /// error.
    pub fn new_embeddings(capacity: usize, n_embd: usize, n_seq_max: usize) -> Result<Batch, BatchError> {
        Batch::alloc(capacity, n_embd.max(1), n_seq_max)
    }

    fn alloc(capacity: usize, n_embd: usize, n_seq_max: usize) -> Result<Batch, BatchError> {
        let capacity = capacity.max(1);
        if capacity > MAX_BATCH || n_embd > i32::MAX as usize {
            return Err(BatchError::TooLarge { capacity, n_embd });
        }
        // SAFETY: a pure query of a compile-time limit.
        let seq_limit = unsafe { llama_sys::llama_max_parallel_sequences() };
        let n_seq_max = n_seq_max.clamp(1, seq_limit.max(1));
        let too_large = BatchError::TooLarge { capacity, n_embd };
        let embd_len = capacity.checked_mul(n_embd).ok_or(too_large.clone())?;
        let seq_len = capacity.checked_mul(n_seq_max).ok_or(too_large.clone())?;
        // Refuse what no allocator can give before allocating (and zero-filling) any of it.
        let per_entry = 4 * 3 + 1 + 8 + if n_embd == 0 { 4 } else { 0 };
        let bytes = [embd_len.checked_mul(4), seq_len.checked_mul(4), capacity.checked_mul(per_entry)]
            .into_iter()
            .try_fold(0usize, |sum, b| sum.checked_add(b?))
            .filter(|&b| b <= isize::MAX as usize);
        bytes.ok_or(too_large)?;
        let mut seq_storage: Vec<i32> = zeroed(seq_len)?;
        let base = seq_storage.as_mut_ptr();
        let mut seq_ptrs = Vec::new();
        seq_ptrs.try_reserve_exact(capacity).map_err(|_| BatchError::AllocFailed { bytes: capacity * 8 })?;
        // `wrapping_add` keeps this free of `unsafe`: every offset is inside `seq_storage`.
        seq_ptrs.extend((0..capacity).map(|i| base.wrapping_add(i * n_seq_max)));
        Ok(Batch {
            token: zeroed(if n_embd == 0 { capacity } else { 0 })?,
            embd: zeroed(embd_len)?,
            pos: zeroed(capacity)?,
            n_seq_id: zeroed(capacity)?,
            logits: zeroed(capacity)?,
            seq_storage,
            seq_ptrs,
            len: 0,
            capacity,
            n_seq_max,
            n_embd,
        })
    }

    /// Number of tokens in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of tokens.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Removes all tokens (keeps the allocation).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `token` at position `pos` in the sequences `seq_ids`; `logits` says whether the
    /// decode computes its output.
    pub fn add(&mut self, token: Token, pos: usize, seq_ids: &[usize], logits: Logits) -> Result<(), BatchError> {
        if self.n_embd != 0 {
            return Err(BatchError::WrongInput("embeddings"));
        }
        let (i, pos) = self.check_entry(pos, seq_ids)?;
        self.token[i] = token.0;
        self.push_entry(i, pos, seq_ids, logits);
        Ok(())
    }

    /// Appends one embedding row (width `n_embd` given at creation) at position `pos`.
    pub fn add_embedding(
        &mut self,
        row: &[f32],
        pos: usize,
        seq_ids: &[usize],
        logits: Logits,
    ) -> Result<(), BatchError> {
        if self.n_embd == 0 {
            return Err(BatchError::WrongInput("token ids"));
        }
        if row.len() != self.n_embd {
            return Err(BatchError::EmbeddingWidth { got: row.len(), expected: self.n_embd });
        }
        let (i, pos) = self.check_entry(pos, seq_ids)?;
        self.embd[i * self.n_embd..(i + 1) * self.n_embd].copy_from_slice(row);
        self.push_entry(i, pos, seq_ids, logits);
        Ok(())
    }

    /// Validates one entry; returns its index and its position as llama.cpp holds it.
    fn check_entry(&self, pos: usize, seq_ids: &[usize]) -> Result<(usize, i32), BatchError> {
        let i = self.len;
        if i >= self.capacity {
            return Err(BatchError::Full(self.capacity));
        }
        let pos = i32::try_from(pos).map_err(|_| BatchError::PositionTooLarge(pos))?;
        if seq_ids.is_empty() || seq_ids.len() > self.n_seq_max {
            return Err(BatchError::SeqIdCount { got: seq_ids.len(), max: self.n_seq_max });
        }
        if let Some(&bad) = seq_ids.iter().find(|&&s| i32::try_from(s).is_err()) {
            return Err(BatchError::SeqIdTooLarge(bad));
        }
        Ok((i, pos))
    }

    /// Writes the per-entry metadata of an entry validated by `check_entry` (which checked that
    /// every id fits an `i32`).
    fn push_entry(&mut self, i: usize, pos: i32, seq_ids: &[usize], logits: Logits) {
        self.pos[i] = pos;
        self.n_seq_id[i] = seq_ids.len() as i32;
        let at = i * self.n_seq_max;
        for (slot, &seq) in self.seq_storage[at..at + seq_ids.len()].iter_mut().zip(seq_ids) {
            *slot = seq as i32;
        }
        self.logits[i] = i8::from(logits == Logits::Want);
        self.len += 1;
    }

    /// Appends consecutive tokens of sequence `seq` from position `start`; `last` says whether
    /// the last of them asks for output (the others do not). On error nothing is added.
    pub fn add_sequence(&mut self, tokens: &[Token], start: usize, seq: usize, last: Logits) -> Result<(), BatchError> {
        if self.len + tokens.len() > self.capacity {
            return Err(BatchError::Full(self.capacity));
        }
        if self.n_embd != 0 {
            return Err(BatchError::WrongInput("embeddings"));
        }
        let before = self.len;
        for (k, &t) in tokens.iter().enumerate() {
            let logits = if k + 1 == tokens.len() { last } else { Logits::Skip };
            if let Err(e) = self.add(t, start.saturating_add(k), &[seq], logits) {
                self.len = before;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Token ids in the batch (empty for an embeddings batch).
    pub fn tokens(&self) -> &[Token] {
        if self.n_embd != 0 {
            return &[];
        }
        // SAFETY: `Token` is `repr(transparent)` over i32 and the first `len` ids are
        // initialised (the whole array is, zero-filled at creation).
        unsafe { std::slice::from_raw_parts(self.token.as_ptr().cast::<Token>(), self.len) }
    }

    /// Whether this batch carries token ids (not embedding rows).
    pub fn has_tokens(&self) -> bool {
        self.n_embd == 0
    }

    /// Row width of an embeddings batch (0 for a token batch).
    pub fn embd_width(&self) -> usize {
        self.n_embd
    }

    /// Which entries ask for output.
    pub(crate) fn output_flags(&self) -> &[i8] {
        &self.logits[..self.len]
    }

    /// Position of entry `i` (`i < len`).
    pub(crate) fn pos(&self, i: usize) -> i32 {
        self.pos.get(i).copied().unwrap_or(-1)
    }

    /// Sequence ids of entry `i` (`i < len`).
    pub(crate) fn seq_ids(&self, i: usize) -> &[i32] {
        let at = i * self.n_seq_max;
        let n = self.n_seq_id.get(i).map_or(0, |&n| n as usize);
        self.seq_storage.get(at..at + n).unwrap_or(&[])
    }

    /// A view for llama.cpp, valid while `self` is borrowed and not modified. llama.cpp only
    /// reads through it (decode copies the batch before working on it).
    pub(crate) fn raw(&self) -> llama_sys::llama_batch {
        let null_if_empty = |p: *mut u8, len: usize| if len == 0 { std::ptr::null_mut() } else { p };
        llama_sys::llama_batch {
            n_tokens: self.len as i32,
            token: null_if_empty(self.token.as_ptr().cast_mut().cast(), self.token.len()).cast(),
            embd: null_if_empty(self.embd.as_ptr().cast_mut().cast(), self.embd.len()).cast(),
            pos: self.pos.as_ptr().cast_mut(),
            n_seq_id: self.n_seq_id.as_ptr().cast_mut(),
            seq_id: self.seq_ptrs.as_ptr().cast_mut(),
            logits: self.logits.as_ptr().cast_mut(),
        }
    }
}
