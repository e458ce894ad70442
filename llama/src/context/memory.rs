//! KV-cache (memory) operations on a [`Context`], validated before they reach llama.cpp.

use std::ops::{Bound, RangeBounds};

use super::Context;
use crate::error::MemoryError;

/// Converts a Rust range of positions into llama.cpp's `[p0, p1)` with -1 for "open".
fn c_range(range: impl RangeBounds<usize>) -> Result<(i32, i32), MemoryError> {
    let start = match range.start_bound() {
        Bound::Included(&s) => Some(s),
        Bound::Excluded(&s) => s.checked_add(1),
        Bound::Unbounded => Some(0),
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    let bad = || MemoryError::InvalidRange { start: start.unwrap_or(usize::MAX), end };
    let p0 = start.and_then(|s| i32::try_from(s).ok()).ok_or_else(bad)?;
    if end.is_some_and(|e| e < p0 as usize) {
        return Err(bad());
    }
    // Every position llama.cpp holds is below i32::MAX: a larger end is the same as open-ended.
    let p1 = end.and_then(|e| i32::try_from(e).ok()).unwrap_or(-1);
    Ok((p0, p1))
}

fn is_partial(p0: i32, p1: i32) -> bool {
    p0 > 0 || p1 >= 0
}

impl Context {
    fn memory(&self) -> llama_sys::llama_memory_t {
        // SAFETY: the context is alive; the memory is owned by it (null for models without one,
        // which every llama_memory_* function accepts).
        unsafe { llama_sys::llama_get_memory(self.as_ptr()) }
    }

    /// `seq` as llama.cpp's id, if it is below `n_seq_max` (itself a `u32`).
    pub(super) fn check_seq(&self, seq: usize) -> Result<i32, MemoryError> {
        let n_seq_max = self.n_seq_max();
        if seq >= n_seq_max {
            return Err(MemoryError::InvalidSeqId { seq, n_seq_max });
        }
        Ok(seq as i32)
    }

    fn check_shift(&self) -> Result<(), MemoryError> {
        if self.kv_can_shift() && self.model.n_pos_per_embd() == 1 {
            Ok(())
        } else {
            Err(MemoryError::ShiftUnsupported)
        }
    }

    /// Empties the KV cache (all sequences) and forgets the last decode's outputs.
    pub fn clear_kv(&mut self) {
        self.ledger.clear_all();
        // SAFETY: valid memory handle (or null, accepted).
        unsafe { llama_sys::llama_memory_clear(self.memory(), true) };
        self.outputs.clear();
    }

    /// Removes the positions in `range` from sequence `seq` (`..` for the whole sequence).
    ///
    /// ```no_run
    /// # let model = llama::Model::load("m.gguf")?;
    /// # let mut ctx = model.context(Default::default())?;
    /// ctx.kv_seq_rm(0, 10..)?; // keep only positions 0..10 of sequence 0
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn kv_seq_rm(&mut self, seq: usize, range: impl RangeBounds<usize>) -> Result<(), MemoryError> {
        let seq = self.check_seq(seq)?;
        let (p0, p1) = c_range(range)?;
        // SAFETY: seq and range validated; valid memory handle.
        if unsafe { llama_sys::llama_memory_seq_rm(self.memory(), seq, p0, p1) } {
            self.ledger.removed(seq, p0, p1);
            Ok(())
        } else {
            Err(MemoryError::PartialRemoveUnsupported)
        }
    }

    /// Makes the positions in `range` of sequence `src` part of sequence `dst` as well (shares
    /// the cells; no recomputation).
    pub fn kv_seq_cp(&mut self, src: usize, dst: usize, range: impl RangeBounds<usize>) -> Result<(), MemoryError> {
        let src = self.check_seq(src)?;
        let dst = self.check_seq(dst)?;
        let (p0, p1) = c_range(range)?;
        // With one KV stream per sequence, llama.cpp can only copy whole streams (it asserts).
        if !self.kv_unified && self.n_seq_max() > 1 && src != dst && is_partial(p0, p1) {
            return Err(MemoryError::PartialCopyNeedsUnifiedCache);
        }
        // SAFETY: ids and range validated, including the whole-stream rule above.
        unsafe { llama_sys::llama_memory_seq_cp(self.memory(), src, dst, p0, p1) };
        self.ledger.copied(src, dst, p0, p1);
        Ok(())
    }

    /// Removes every sequence except `seq`.
    pub fn kv_seq_keep(&mut self, seq: usize) -> Result<(), MemoryError> {
        let seq = self.check_seq(seq)?;
        // SAFETY: seq validated; valid memory handle.
        unsafe { llama_sys::llama_memory_seq_keep(self.memory(), seq) };
        self.ledger.kept(seq);
        Ok(())
    }

    /// Adds `delta` to the positions in `range` of sequence `seq` (context shifting).
    pub fn kv_seq_add(&mut self, seq: usize, range: impl RangeBounds<usize>, delta: i32) -> Result<(), MemoryError> {
        let seq = self.check_seq(seq)?;
        let (p0, p1) = c_range(range)?;
        self.check_shift()?;
        // SAFETY: seq and range validated; the memory supports shifting.
        unsafe { llama_sys::llama_memory_seq_add(self.memory(), seq, p0, p1, delta) };
        self.ledger.forget(seq);
        Ok(())
    }

    /// Divides the positions in `range` of sequence `seq` by `d` (self-extend).
    pub fn kv_seq_div(&mut self, seq: usize, range: impl RangeBounds<usize>, d: usize) -> Result<(), MemoryError> {
        let seq = self.check_seq(seq)?;
        let (p0, p1) = c_range(range)?;
        let Some(d) = i32::try_from(d).ok().filter(|&d| d >= 1) else {
            return Err(MemoryError::InvalidDivisor(d));
        };
        self.check_shift()?;
        // SAFETY: seq, range and divisor validated; the memory supports shifting.
        unsafe { llama_sys::llama_memory_seq_div(self.memory(), seq, p0, p1, d) };
        self.ledger.forget(seq);
        Ok(())
    }

    /// Smallest position of sequence `seq` in the cache, `None` if it is empty.
    pub fn kv_seq_pos_min(&self, seq: usize) -> Result<Option<usize>, MemoryError> {
        let seq = self.check_seq(seq)?;
        // SAFETY: seq validated; valid memory handle.
        let p = unsafe { llama_sys::llama_memory_seq_pos_min(self.memory(), seq) };
        Ok(usize::try_from(p).ok())
    }

    /// Largest position of sequence `seq` in the cache, `None` if it is empty.
    pub fn kv_seq_pos_max(&self, seq: usize) -> Result<Option<usize>, MemoryError> {
        let seq = self.check_seq(seq)?;
        // SAFETY: seq validated; valid memory handle.
        let p = unsafe { llama_sys::llama_memory_seq_pos_max(self.memory(), seq) };
        Ok(usize::try_from(p).ok())
    }

    /// Whether positions can be shifted ([`kv_seq_add`](Self::kv_seq_add), [`kv_seq_div`](Self::kv_seq_div)).
    pub fn kv_can_shift(&self) -> bool {
        // SAFETY: valid memory handle (or null → false).
        unsafe { llama_sys::llama_memory_can_shift(self.memory()) }
    }
}

#[cfg(test)]
mod tests {
    use super::c_range;
    use crate::error::MemoryError;

    #[test]
    fn ranges_map_to_c_convention() {
        assert_eq!(c_range(..), Ok((0, -1)));
        assert_eq!(c_range(3..), Ok((3, -1)));
        assert_eq!(c_range(..5), Ok((0, 5)));
        assert_eq!(c_range(2..=4), Ok((2, 5)));
        assert_eq!(c_range(..=i32::MAX as usize), Ok((0, -1)));
        assert_eq!(c_range(..=usize::MAX), Ok((0, -1)));
        assert_eq!(c_range(1..usize::MAX), Ok((1, -1)));
        let beyond = i32::MAX as usize + 1;
        assert_eq!(c_range(beyond..), Err(MemoryError::InvalidRange { start: beyond, end: None }));
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 5..2;
        assert!(matches!(c_range(reversed), Err(MemoryError::InvalidRange { .. })));
        assert_eq!(c_range(4..4), Ok((4, 4)));
    }
}
