//! An owned batch of tokens for [`Context::decode`](crate::Context::decode).

use crate::error::BatchError;
use crate::Token;

/// Tokens with their positions, sequence ids and output flags, ready to decode.
///
/// Capacity is fixed at creation; adding past it is an error, not a buffer overflow.
///
/// ```
/// use llama::{Batch, Token};
/// let mut batch = Batch::new(2, 1);
/// batch.add(Token(1), 0, &[0], false)?;
/// batch.add(Token(2), 1, &[0], true)?;
/// assert!(batch.add(Token(3), 2, &[0], true).is_err()); // full
/// # Ok::<(), llama::BatchError>(())
/// ```
pub struct Batch {
    raw: llama_sys::llama_batch,
    capacity: usize,
    n_seq_max: usize,
    /// Row width for embeddings input; 0 for a token batch.
    n_embd: usize,
}

// SAFETY: the batch owns its heap arrays exclusively (allocated by llama_batch_init, freed in
// Drop) and llama.cpp keeps no reference to them beyond a decode call; nothing is thread-bound.
unsafe impl Send for Batch {}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("len", &self.len()).field("capacity", &self.capacity).finish()
    }
}

impl Batch {
    /// A batch for up to `capacity` tokens, each in up to `n_seq_max` sequences (both at least 1).
    pub fn new(capacity: usize, n_seq_max: usize) -> Batch {
        Batch::alloc(capacity, 0, n_seq_max)
    }

    /// A batch of embedding rows of width `n_embd` instead of token ids (e.g. projected image
    /// features), for up to `capacity` rows.
    pub fn new_embeddings(capacity: usize, n_embd: usize, n_seq_max: usize) -> Batch {
        Batch::alloc(capacity, n_embd.clamp(1, i32::MAX as usize), n_seq_max)
    }

    fn alloc(capacity: usize, n_embd: usize, n_seq_max: usize) -> Batch {
        let capacity = capacity.clamp(1, i32::MAX as usize);
        let n_seq_max = n_seq_max.clamp(1, i32::MAX as usize);
        if capacity.checked_mul(n_embd.max(1)).and_then(|n| n.checked_mul(4)).is_none_or(|b| b > isize::MAX as usize) {
            std::alloc::handle_alloc_error(std::alloc::Layout::new::<f32>());
        }
        // SAFETY: sizes are positive and fit i32; n_embd = 0 allocates token ids, otherwise
        // `capacity * n_embd` floats.
        let raw = unsafe { llama_sys::llama_batch_init(capacity as i32, n_embd as i32, n_seq_max as i32) };
        let data = if n_embd == 0 { raw.token.cast::<u8>() } else { raw.embd.cast::<u8>() };
        if data.is_null() || raw.pos.is_null() || raw.seq_id.is_null() {
            std::alloc::handle_alloc_error(std::alloc::Layout::new::<i32>());
        }
        Batch { raw, capacity, n_seq_max, n_embd }
    }

    /// Number of tokens in the batch.
    pub fn len(&self) -> usize {
        self.raw.n_tokens as usize
    }

    /// Whether the batch holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.raw.n_tokens == 0
    }

    /// Maximum number of tokens.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Removes all tokens (keeps the allocation).
    pub fn clear(&mut self) {
        self.raw.n_tokens = 0;
    }

    /// Appends `token` at position `pos` in the sequences `seq_ids`; `logits` asks for its
    /// output (logits or embeddings) after decoding.
    pub fn add(&mut self, token: Token, pos: i32, seq_ids: &[i32], logits: bool) -> Result<(), BatchError> {
        if self.n_embd != 0 {
            return Err(BatchError::WrongInput("embeddings"));
        }
        let i = self.check_entry(pos, seq_ids)?;
        // SAFETY: `i < capacity` and token batches have a `capacity`-long token array.
        unsafe { *self.raw.token.add(i) = token.0 };
        self.push_entry(i, pos, seq_ids, logits);
        Ok(())
    }

    /// Appends one embedding row (width `n_embd` given at creation) at position `pos`.
    pub fn add_embedding(&mut self, row: &[f32], pos: i32, seq_ids: &[i32], logits: bool) -> Result<(), BatchError> {
        if self.n_embd == 0 {
            return Err(BatchError::WrongInput("token ids"));
        }
        if row.len() != self.n_embd {
            return Err(BatchError::EmbeddingWidth { got: row.len(), expected: self.n_embd });
        }
        let i = self.check_entry(pos, seq_ids)?;
        // SAFETY: `i < capacity`; the embd array holds `capacity * n_embd` floats and the row is
        // exactly `n_embd` long.
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), self.raw.embd.add(i * self.n_embd), self.n_embd) };
        self.push_entry(i, pos, seq_ids, logits);
        Ok(())
    }

    /// Validates one entry; returns its index.
    fn check_entry(&self, pos: i32, seq_ids: &[i32]) -> Result<usize, BatchError> {
        let i = self.len();
        if i >= self.capacity {
            return Err(BatchError::Full(self.capacity));
        }
        if pos < 0 {
            return Err(BatchError::NegativePosition(pos));
        }
        if seq_ids.is_empty() || seq_ids.len() > self.n_seq_max {
            return Err(BatchError::SeqIdCount { got: seq_ids.len(), max: self.n_seq_max });
        }
        if let Some(&bad) = seq_ids.iter().find(|&&s| s < 0) {
            return Err(BatchError::NegativeSeqId(bad));
        }
        Ok(i)
    }

    /// Writes the per-entry metadata of an entry validated by `check_entry`.
    fn push_entry(&mut self, i: usize, pos: i32, seq_ids: &[i32], logits: bool) {
        // SAFETY: `i < capacity` (checked), and llama_batch_init allocated `capacity` entries in
        // every array and `n_seq_max` ids in each `seq_id[i]`; `seq_ids.len() <= n_seq_max`.
        unsafe {
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = seq_ids.len() as i32;
            std::ptr::copy_nonoverlapping(seq_ids.as_ptr(), *self.raw.seq_id.add(i), seq_ids.len());
            *self.raw.logits.add(i) = i8::from(logits);
        }
        self.raw.n_tokens += 1;
    }

    /// Appends consecutive tokens of one sequence starting at `start_pos`; only the last one asks
    /// for logits when `logits_last` is set. On error nothing is added.
    pub fn add_sequence(
        &mut self,
        tokens: &[Token],
        start_pos: i32,
        seq_id: i32,
        logits_last: bool,
    ) -> Result<(), BatchError> {
        if self.len() + tokens.len() > self.capacity {
            return Err(BatchError::Full(self.capacity));
        }
        if self.n_embd != 0 {
            return Err(BatchError::WrongInput("embeddings"));
        }
        let before = self.raw.n_tokens;
        for (k, &t) in tokens.iter().enumerate() {
            let pos = i32::try_from(k).ok().and_then(|k| start_pos.checked_add(k)).unwrap_or(-1);
            if let Err(e) = self.add(t, pos, &[seq_id], logits_last && k + 1 == tokens.len()) {
                self.raw.n_tokens = before;
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
        // SAFETY: the first `len` entries were written by `add`; `Token` is transparent over i32.
        unsafe { std::slice::from_raw_parts(self.raw.token.cast::<Token>(), self.len()) }
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
        // SAFETY: the first `len` entries were written by `add`.
        unsafe { std::slice::from_raw_parts(self.raw.logits, self.len()) }
    }

    /// Sequence ids of entry `i` (`i < len`).
    pub(crate) fn seq_ids(&self, i: usize) -> &[i32] {
        debug_assert!(i < self.len());
        // SAFETY: entry `i` was written by `add`, which stored `n_seq_id[i]` valid ids.
        unsafe {
            let n = *self.raw.n_seq_id.add(i) as usize;
            std::slice::from_raw_parts(*self.raw.seq_id.add(i), n)
        }
    }

    pub(crate) fn raw(&self) -> llama_sys::llama_batch {
        self.raw
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: `raw` came from llama_batch_init and is freed exactly once. n_tokens is not
        // used by llama_batch_free.
        unsafe { llama_sys::llama_batch_free(self.raw) }
    }
}
