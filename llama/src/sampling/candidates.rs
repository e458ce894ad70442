//! Safe views of llama.cpp's candidates array (`llama_token_data_array`).

use crate::Token;

/// One candidate token: id, logit and (once a sampler computed it) probability.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct TokenData {
    /// Token id.
    pub id: Token,
    /// Log-odds.
    pub logit: f32,
    /// Probability (valid after a softmax-computing sampler).
    pub p: f32,
}

// `TokenData` is read and written in place of `llama_token_data`.
const _: () = {
    assert!(std::mem::size_of::<TokenData>() == std::mem::size_of::<llama_sys::llama_token_data>());
    assert!(std::mem::align_of::<TokenData>() == std::mem::align_of::<llama_sys::llama_token_data>());
};

/// The candidates a [`CustomSampler`](crate::CustomSampler) sees, borrowed from llama.cpp for
/// the duration of one `apply` call.
pub struct Candidates<'a> {
    raw: &'a mut llama_sys::llama_token_data_array,
}

impl std::fmt::Debug for Candidates<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidates").field("len", &self.len()).field("selected", &self.selected()).finish()
    }
}

impl<'a> Candidates<'a> {
    /// # Safety
    /// `raw.data` must point to `raw.size` initialised entries, exclusively borrowed for `'a`.
    pub(crate) unsafe fn new(raw: &'a mut llama_sys::llama_token_data_array) -> Self {
        Candidates { raw }
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.raw.size
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.raw.size == 0
    }

    /// The candidates.
    pub fn as_slice(&self) -> &[TokenData] {
        if self.raw.data.is_null() {
            return &[];
        }
        // SAFETY: `data` holds `size` entries (constructor contract); `TokenData` has the same
        // layout as `llama_token_data`.
        unsafe { std::slice::from_raw_parts(self.raw.data.cast(), self.raw.size) }
    }

    /// The candidates, mutable (change logits, reorder; then fix [`set_sorted`](Self::set_sorted)).
    pub fn as_mut_slice(&mut self) -> &mut [TokenData] {
        if self.raw.data.is_null() {
            return &mut [];
        }
        // SAFETY: as in `as_slice`, and the array is exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.raw.data.cast(), self.raw.size) }
    }

    /// Keeps only the first `n` candidates (no effect if `n >= len`).
    pub fn truncate(&mut self, n: usize) {
        self.raw.size = self.raw.size.min(n);
        if self.selected().is_none() {
            self.raw.selected = -1;
        }
    }

    /// Whether the candidates are sorted by descending logit.
    pub fn is_sorted(&self) -> bool {
        self.raw.sorted
    }

    /// Declares whether the candidates are sorted by descending logit.
    pub fn set_sorted(&mut self, sorted: bool) {
        self.raw.sorted = sorted;
    }

    /// Index of the selected candidate, if a sampler selected one.
    pub fn selected(&self) -> Option<usize> {
        usize::try_from(self.raw.selected).ok().filter(|&i| i < self.raw.size)
    }

    /// Selects candidate `index` (ignored if out of range), or clears the selection.
    pub fn select(&mut self, index: Option<usize>) {
        self.raw.selected = match index {
            Some(i) if i < self.raw.size => i as i64,
            _ => -1,
        };
    }

    /// Sorts by descending logit and records it.
    pub fn sort_by_logit(&mut self) {
        self.as_mut_slice().sort_by(|a, b| b.logit.total_cmp(&a.logit));
        self.raw.sorted = true;
    }

    /// Sets `p` to the softmax of the logits.
    pub fn softmax(&mut self) {
        softmax(self.as_mut_slice());
    }
}

fn softmax(items: &mut [TokenData]) {
    let max = items.iter().map(|c| c.logit).fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for c in items.iter_mut() {
        c.p = (c.logit - max).exp();
        sum += c.p;
    }
    if sum > 0.0 {
        for c in items.iter_mut() {
            c.p /= sum;
        }
    }
}

/// An owned candidates array, e.g. built from a row of logits, to run a chain over with
/// [`Sampler::apply`](crate::Sampler::apply).
///
/// ```
/// use llama::{Sampler, Token, TokenDataArray};
/// let mut c = TokenDataArray::from_logits(&[1.0, 3.0, 2.0, 0.5]);
/// Sampler::chain().top_k(2).apply(&mut c)?;
/// let ids: Vec<Token> = c.as_slice().iter().map(|t| t.id).collect();
/// assert_eq!(ids, [Token(1), Token(2)]);
/// # Ok::<(), llama::SampleError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct TokenDataArray {
    data: Vec<TokenData>,
    sorted: bool,
    selected: Option<usize>,
}

impl TokenDataArray {
    /// Candidates `0..logits.len()` with the given logits.
    pub fn from_logits(logits: &[f32]) -> Self {
        let data =
            logits.iter().enumerate().map(|(i, &logit)| TokenData { id: Token(i as i32), logit, p: 0.0 }).collect();
        TokenDataArray { data, sorted: false, selected: None }
    }

    /// Candidates from explicit entries.
    pub fn new(data: Vec<TokenData>) -> Self {
        TokenDataArray { data, sorted: false, selected: None }
    }

    /// The candidates left.
    pub fn as_slice(&self) -> &[TokenData] {
        &self.data
    }

    /// The selected candidate, if a sampler selected one.
    pub fn selected(&self) -> Option<&TokenData> {
        self.selected.and_then(|i| self.data.get(i))
    }

    /// Whether the candidates are sorted by descending logit.
    pub fn is_sorted(&self) -> bool {
        self.sorted
    }

    /// Sets `p` to the softmax of the logits.
    pub fn softmax(&mut self) {
        softmax(&mut self.data);
    }

    pub(crate) fn raw(&mut self) -> llama_sys::llama_token_data_array {
        llama_sys::llama_token_data_array {
            data: self.data.as_mut_ptr().cast(),
            size: self.data.len(),
            selected: self.selected.map_or(-1, |s| s as i64),
            sorted: self.sorted,
        }
    }

    /// Copies back what a chain did to the array (samplers may shrink it, reorder it, or
    /// point it at their own buffer).
    pub(crate) fn update_from(&mut self, arr: &llama_sys::llama_token_data_array) {
        let own = self.data.as_mut_ptr().cast::<llama_sys::llama_token_data>();
        if arr.data == own {
            self.data.truncate(arr.size.min(self.data.len()));
        } else if !arr.data.is_null() {
            // SAFETY: the sampler left `size` valid entries at `data`, alive until it runs again.
            let theirs = unsafe { std::slice::from_raw_parts(arr.data.cast::<TokenData>(), arr.size) };
            self.data = theirs.to_vec();
        }
        self.sorted = arr.sorted;
        self.selected = usize::try_from(arr.selected).ok().filter(|&s| s < self.data.len());
    }
}
