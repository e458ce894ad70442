//! LoRA adapters and control vectors applied to a [`Context`].

use std::ffi::CString;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::model::{read_string_opt, ModelHandle};
use crate::{Context, Model};

/// Why an adapter could not be loaded or applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The file does not exist or is not GGUF.
    #[error(transparent)]
    Load(#[from] crate::LoadError),
    /// llama.cpp rejected the adapter (wrong architecture or shapes for this model, not a
    /// LoRA); carries llama.cpp's reason.
    #[error("llama.cpp rejected the LoRA adapter: {0}")]
    Rejected(String),
    /// The adapter was loaded for a different model than the context's.
    #[error("the adapter belongs to a different model than the context")]
    WrongModel,
    /// A scale is not finite.
    #[error("adapter scales must be finite")]
    InvalidScale,
    /// Control vector data has the wrong shape for this model.
    #[error("control vector: {0}")]
    InvalidControlVector(&'static str),
}

struct LoraInner {
    ptr: NonNull<llama_sys::llama_adapter_lora>,
    model: Arc<ModelHandle>,
}

// SAFETY: after loading, an adapter's tensors are only read by contexts, like model weights;
// llama.cpp keeps no per-thread state in it.
unsafe impl Send for LoraInner {}
// SAFETY: as above; `&LoraAdapter` only reads metadata.
unsafe impl Sync for LoraInner {}

impl Drop for LoraInner {
    fn drop(&mut self) {
        // SAFETY: the adapter belongs to `self.model`, which is still alive (dropped after this);
        // every context that applied it holds a clone, so none still uses it.
        unsafe { llama_sys::llama_adapter_lora_free(self.ptr.as_ptr()) }
    }
}

/// A LoRA adapter loaded for one [`Model`]. Cheap to clone; contexts that apply it keep it alive.
///
/// ```no_run
/// use llama::{LoraAdapter, Model};
/// let model = Model::load("model.gguf")?;
/// let lora = LoraAdapter::load(&model, "adapter.gguf")?;
/// let mut ctx = model.context(Default::default())?;
/// ctx.set_lora_adapters(&[(lora, 1.0)])?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct LoraAdapter(Arc<LoraInner>);

impl std::fmt::Debug for LoraAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraAdapter").field("meta", &self.metadata()).finish()
    }
}

impl LoraAdapter {
    /// Loads a GGUF LoRA adapter for `model`.
    pub fn load(model: &Model, path: impl AsRef<Path>) -> Result<LoraAdapter, AdapterError> {
        let path = path.as_ref();
        crate::model::check_gguf(path)?;
        let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| crate::LoadError::InvalidPath)?;
        // SAFETY: model alive; path NUL-terminated. llama.cpp catches its exceptions and returns
        // null on failure.
        let (ptr, reason) = crate::backend::capture_errors(|| unsafe {
            llama_sys::llama_rs_adapter_lora_init(model.as_ptr(), c_path.as_ptr())
        });
        let ptr = NonNull::new(ptr).ok_or_else(|| AdapterError::Rejected(format!("{}: {reason}", path.display())))?;
        Ok(LoraAdapter(Arc::new(LoraInner { ptr, model: model.handle.clone() })))
    }

    /// The adapter's scalar metadata key/value pairs.
    pub fn metadata(&self) -> Vec<(String, String)> {
        let p = self.0.ptr.as_ptr();
        // SAFETY: adapter alive.
        let n = unsafe { llama_sys::llama_adapter_meta_count(p) };
        (0..n)
            .filter_map(|i| {
                // SAFETY: `i` below the count; the callee writes at most `len` bytes.
                let k = read_string_opt(|b, l| unsafe { llama_sys::llama_adapter_meta_key_by_index(p, i, b, l) })?;
                // SAFETY: as above.
                let v = read_string_opt(|b, l| unsafe { llama_sys::llama_adapter_meta_val_str_by_index(p, i, b, l) })?;
                Some((k, v))
            })
            .collect()
    }
}

/// A control vector: one direction per layer added to the residual stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlVector {
    /// `n_embd` floats per layer, for layers `1..=n_layer` in order.
    pub data: Vec<f32>,
    /// First layer to apply to (inclusive, 1-based).
    pub layer_start: i32,
    /// Last layer to apply to (inclusive).
    pub layer_end: i32,
}

impl Context {
    /// Applies LoRA adapters with their scales, replacing any applied before (an empty list
    /// removes them all). The context keeps the adapters alive while they are applied.
    pub fn set_lora_adapters(&mut self, adapters: &[(LoraAdapter, f32)]) -> Result<(), AdapterError> {
        for (a, scale) in adapters {
            if !Arc::ptr_eq(&a.0.model, &self.model().handle) {
                return Err(AdapterError::WrongModel);
            }
            if !scale.is_finite() {
                return Err(AdapterError::InvalidScale);
            }
        }
        let mut ptrs: Vec<*mut llama_sys::llama_adapter_lora> =
            adapters.iter().map(|(a, _)| a.0.ptr.as_ptr()).collect();
        let mut scales: Vec<f32> = adapters.iter().map(|(_, s)| *s).collect();
        // SAFETY: the context is alive; every adapter belongs to its model and is kept alive by
        // `self.loras` below for as long as it is applied; arrays have `len` entries (non-null
        // even when empty, so llama.cpp's null check does not trip).
        let rc = unsafe {
            llama_sys::llama_rs_set_adapters_lora(self.as_ptr(), ptrs.as_mut_ptr(), ptrs.len(), scales.as_mut_ptr())
        };
        if rc != 0 {
            let what = crate::barrier::take_exception().unwrap_or_else(|| format!("code {rc}"));
            return Err(AdapterError::Rejected(format!("llama.cpp could not apply the adapters: {what}")));
        }
        self.loras = adapters.iter().map(|(a, _)| a.clone()).collect();
        // Cached KV was computed under the old adapters: never reuse it.
        self.ledger.forget_all();
        Ok(())
    }

    /// Applies a control vector (`None` removes it).
    pub fn set_control_vector(&mut self, cvec: Option<&ControlVector>) -> Result<(), AdapterError> {
        let n_embd = self.model().n_embd();
        let n_layer = self.model().n_layer() as i32;
        let rc = match cvec {
            None => {
                // SAFETY: a null pointer clears the control vector.
                unsafe { llama_sys::llama_rs_set_adapter_cvec(self.as_ptr(), std::ptr::null(), 0, n_embd as i32, 0, 0) }
            }
            Some(c) => {
                if c.data.is_empty() || c.data.len() % n_embd != 0 || c.data.len() / n_embd > n_layer as usize {
                    return Err(AdapterError::InvalidControlVector("data must hold n_embd floats per layer"));
                }
                if c.layer_start < 1 || c.layer_end < c.layer_start || c.layer_end > n_layer {
                    return Err(AdapterError::InvalidControlVector("layer range must lie within 1..=n_layer"));
                }
                if c.data.iter().any(|x| !x.is_finite()) {
                    return Err(AdapterError::InvalidControlVector("values must be finite"));
                }
                // SAFETY: data is valid for `len` floats, a whole number of n_embd rows, at most
                // n_layer of them; the layer range is inside the model.
                unsafe {
                    llama_sys::llama_rs_set_adapter_cvec(
                        self.as_ptr(),
                        c.data.as_ptr(),
                        c.data.len(),
                        n_embd as i32,
                        c.layer_start,
                        c.layer_end,
                    )
                }
            }
        };
        // Cached KV was computed under the old vector (even a refused call may have cleared it).
        self.ledger.forget_all();
        if rc == 0 {
            Ok(())
        } else {
            Err(AdapterError::InvalidControlVector("llama.cpp rejected the control vector"))
        }
    }
}
