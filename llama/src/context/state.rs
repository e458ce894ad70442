//! Saving and restoring a context's state (logits, embeddings, KV cache), whole or per sequence.

use std::ffi::CString;
use std::path::Path;

use super::Context;
use crate::error::StateError;
use crate::Token;

fn c_path(path: &Path) -> Result<CString, StateError> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| StateError::InvalidPath)
}

/// Longest architecture name a state may claim (the real ones are a few bytes).
const MAX_ARCH_NAME: u32 = 256;

/// A whole state starts with the model's architecture name, length first, and llama.cpp
/// allocates that length before checking it against the data: four bytes could cost 4 GiB.
fn check_arch_name(data: &[u8]) -> Result<(), StateError> {
    let len = data.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_le_bytes);
    match len {
        Some(n) if n <= MAX_ARCH_NAME && n as usize <= data.len() - 4 => Ok(()),
        _ => Err(StateError::Rejected),
    }
}

/// A session file holds magic, version, token count, tokens, then the state: checks the token
/// count against `max_tokens` and the file (so a buffer is sized by what is there), and for a
/// `whole` state the architecture name as [`check_arch_name`]. Returns the token count.
fn check_session_file(path: &Path, max_tokens: usize, whole: bool) -> Result<usize, StateError> {
    use std::io::{Read, Seek, SeekFrom};
    let rejected = |_| StateError::FileRejected(max_tokens);
    let mut file = std::fs::File::open(path).map_err(rejected)?;
    let len = file.metadata().map_err(rejected)?.len();
    let mut header = [0u8; 12];
    file.read_exact(&mut header).map_err(rejected)?;
    let n_tokens = u64::from(u32::from_le_bytes([header[8], header[9], header[10], header[11]]));
    let state_at = 12 + n_tokens * 4;
    if state_at > len || n_tokens > max_tokens as u64 {
        return Err(StateError::FileRejected(max_tokens));
    }
    if !whole {
        return Ok(n_tokens as usize);
    }
    file.seek(SeekFrom::Start(state_at)).map_err(rejected)?;
    let mut name = [0u8; 4];
    file.read_exact(&mut name).map_err(rejected)?;
    let n = u64::from(u32::from_le_bytes(name));
    if n > u64::from(MAX_ARCH_NAME) || state_at + 4 + n > len {
        return Err(StateError::FileRejected(max_tokens));
    }
    Ok(n_tokens as usize)
}

impl Context {
    /// Serialises the whole state: the KV cache of every sequence (not the last decode's
    /// logits: decode the next token after restoring). llama.cpp checks the architecture and
    /// cache shapes on load, so state from another model of the same architecture and size
    /// may load without error but mean nothing.
    ///
    /// ```no_run
    /// # let model = llama::Model::load("m.gguf")?;
    /// # let mut ctx = model.context(Default::default())?;
    /// let saved = ctx.save_state()?;
    /// ctx.clear_kv();
    /// ctx.load_state(&saved)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save_state(&self) -> Result<Vec<u8>, StateError> {
        // SAFETY: the context is alive.
        let size = unsafe { llama_sys::llama_rs_state_get_size(self.as_ptr()) };
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` has `size` writable bytes; llama.cpp writes at most that many.
        let n = unsafe { llama_sys::llama_rs_state_get_data(self.as_ptr(), buf.as_mut_ptr(), buf.len()) };
        if n == 0 || n > size {
            return Err(StateError::SaveFailed);
        }
        buf.truncate(n);
        Ok(buf)
    }

    /// Restores a state from [`save_state`](Self::save_state). On error the KV cache is cleared.
    pub fn load_state(&mut self, data: &[u8]) -> Result<(), StateError> {
        self.ledger.forget_all();
        if let Err(e) = check_arch_name(data) {
            self.clear_kv();
            return Err(e);
        }
        // SAFETY: `data` is readable for its length; llama.cpp bounds-checks every read against
        // it and reports failure with 0.
        let n = unsafe { llama_sys::llama_rs_state_set_data(self.as_ptr(), data.as_ptr(), data.len()) };
        // The state holds the KV cache only, not the last outputs.
        self.outputs.clear();
        if n == 0 {
            self.clear_kv();
            return Err(StateError::Rejected);
        }
        Ok(())
    }

    /// Saves the whole state plus the `tokens` it was built from to a session file.
    pub fn save_state_file(&self, path: impl AsRef<Path>, tokens: &[Token]) -> Result<(), StateError> {
        let path = c_path(path.as_ref())?;
        // SAFETY: NUL-terminated path; `tokens` valid for its length (`Token` is transparent).
        let ok = unsafe {
            llama_sys::llama_rs_state_save_file(self.as_ptr(), path.as_ptr(), tokens.as_ptr().cast(), tokens.len())
        };
        ok.then_some(()).ok_or(StateError::SaveFailed)
    }

    /// Loads a session file saved by [`save_state_file`](Self::save_state_file); returns its
    /// tokens (at most `max_tokens`). On error the KV cache is cleared.
    pub fn load_state_file(&mut self, path: impl AsRef<Path>, max_tokens: usize) -> Result<Vec<Token>, StateError> {
        self.ledger.forget_all();
        let n_tokens = check_session_file(path.as_ref(), max_tokens, true)?;
        let path = c_path(path.as_ref())?;
        // Sized by the file (checked against `max_tokens`), not by the caller's bound.
        let mut tokens = vec![Token(0); n_tokens];
        let mut n = 0usize;
        // SAFETY: NUL-terminated path; `tokens` has room for `n_tokens`; `n` is writable.
        let ok = unsafe {
            llama_sys::llama_rs_state_load_file(
                self.as_ptr(),
                path.as_ptr(),
                tokens.as_mut_ptr().cast(),
                tokens.len(),
                &mut n,
            )
        };
        self.outputs.clear();
        if !ok {
            self.clear_kv();
            return Err(StateError::FileRejected(max_tokens));
        }
        tokens.truncate(n.min(max_tokens));
        Ok(tokens)
    }

    /// Serialises the KV cache of one sequence.
    pub fn save_seq_state(&self, seq: usize) -> Result<Vec<u8>, StateError> {
        let seq = self.check_seq(seq)?;
        // SAFETY: the context is alive; seq validated.
        let size = unsafe { llama_sys::llama_rs_state_seq_get_size(self.as_ptr(), seq) };
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` has `size` writable bytes.
        let n = unsafe { llama_sys::llama_rs_state_seq_get_data(self.as_ptr(), buf.as_mut_ptr(), buf.len(), seq) };
        if n == 0 || n > size {
            return Err(StateError::SaveFailed);
        }
        buf.truncate(n);
        Ok(buf)
    }

    /// Restores one sequence (into `seq`, which may differ from the one saved). On error that
    /// sequence is removed from the cache.
    pub fn load_seq_state(&mut self, seq: usize, data: &[u8]) -> Result<(), StateError> {
        let c_seq = self.check_seq(seq)?;
        self.ledger.forget(c_seq);
        // SAFETY: seq validated; `data` readable for its length, reads are bounds-checked.
        let n = unsafe { llama_sys::llama_rs_state_seq_set_data(self.as_ptr(), data.as_ptr(), data.len(), c_seq) };
        if n == 0 {
            self.kv_seq_rm(seq, ..)?;
            return Err(StateError::Rejected);
        }
        Ok(())
    }

    /// Saves one sequence plus its `tokens` to a file.
    pub fn save_seq_state_file(&self, path: impl AsRef<Path>, seq: usize, tokens: &[Token]) -> Result<(), StateError> {
        let seq = self.check_seq(seq)?;
        let path = c_path(path.as_ref())?;
        // SAFETY: NUL-terminated path, seq validated, `tokens` valid for its length.
        let n = unsafe {
            llama_sys::llama_rs_state_seq_save_file(
                self.as_ptr(),
                path.as_ptr(),
                seq,
                tokens.as_ptr().cast(),
                tokens.len(),
            )
        };
        (n > 0).then_some(()).ok_or(StateError::SaveFailed)
    }

    /// Loads a sequence file into `seq`; returns its tokens (at most `max_tokens`). On error that
    /// sequence is removed from the cache.
    pub fn load_seq_state_file(
        &mut self,
        path: impl AsRef<Path>,
        seq: usize,
        max_tokens: usize,
    ) -> Result<Vec<Token>, StateError> {
        let c_seq = self.check_seq(seq)?;
        self.ledger.forget(c_seq);
        let n_tokens = check_session_file(path.as_ref(), max_tokens, false)?;
        let path = c_path(path.as_ref())?;
        let mut tokens = vec![Token(0); n_tokens];
        let mut n = 0usize;
        // SAFETY: NUL-terminated path, seq validated, `tokens` has room for `n_tokens`.
        let read = unsafe {
            llama_sys::llama_rs_state_seq_load_file(
                self.as_ptr(),
                path.as_ptr(),
                c_seq,
                tokens.as_mut_ptr().cast(),
                tokens.len(),
                &mut n,
            )
        };
        if read == 0 {
            self.kv_seq_rm(seq, ..)?;
            return Err(StateError::FileRejected(max_tokens));
        }
        tokens.truncate(n.min(max_tokens));
        Ok(tokens)
    }
}
