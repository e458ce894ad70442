//! Samplers written in Rust, plugged into llama.cpp chains through `llama_sampler_i`.

use std::ffi::{c_char, CString};
use std::sync::{Arc, Mutex, OnceLock};

use super::Candidates;
use crate::Token;

/// A sampler implemented in Rust. Add it to a chain with [`Sampler::custom`](crate::Sampler::custom).
///
/// A panic in any method is caught at the C boundary and reported as
/// [`SampleError::CustomPanicked`](crate::SampleError::CustomPanicked).
///
/// ```
/// use llama::{Candidates, CustomSampler, Sampler, Token, TokenDataArray};
///
/// /// Never lets token 0 through.
/// #[derive(Clone)]
/// struct BanZero;
/// impl CustomSampler for BanZero {
///     fn name(&self) -> &str { "ban-zero" }
///     fn apply(&mut self, c: &mut Candidates<'_>) {
///         for t in c.as_mut_slice() {
///             if t.id == Token(0) { t.logit = f32::NEG_INFINITY; }
///         }
///     }
///     fn clone_box(&self) -> Option<Box<dyn CustomSampler>> { Some(Box::new(self.clone())) }
/// }
///
/// let mut chain = Sampler::chain().custom(BanZero).greedy_pick();
/// let mut c = TokenDataArray::from_logits(&[9.0, 1.0, 2.0]);
/// chain.apply(&mut c)?;
/// assert_eq!(c.selected().map(|t| t.id), Some(Token(2)));
/// # Ok::<(), llama::SampleError>(())
/// ```
pub trait CustomSampler: Send + 'static {
    /// A short name (shown in [`Sampler::names`](crate::Sampler::names)).
    fn name(&self) -> &str;
    /// Transforms the candidates: change logits, drop entries, sort, or select one.
    fn apply(&mut self, candidates: &mut Candidates<'_>);
    /// Called with each token the chain accepts.
    fn accept(&mut self, _token: Token) {}
    /// Clears any state for a new generation.
    fn reset(&mut self) {}
    /// A copy with the same state, if cloning is supported (needed by
    /// [`Sampler::try_clone`](crate::Sampler::try_clone)).
    fn clone_box(&self) -> Option<Box<dyn CustomSampler>> {
        None
    }
}

/// Where the Rust samplers of one chain report a panic; the chain turns it into
/// [`SampleError::CustomPanicked`](crate::SampleError::CustomPanicked) after the C call returns.
#[derive(Clone, Default)]
pub(super) struct PanicSlot(Arc<Mutex<Option<String>>>);

impl PanicSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // No user code runs while the lock is held, so it cannot be poisoned by a panic there.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps the first panic of a call: later ones are usually its consequences.
    fn set(&self, message: String) {
        self.lock().get_or_insert(message);
    }

    pub(super) fn take(&self) -> Option<String> {
        self.lock().take()
    }
}

/// What llama.cpp's `ctx` pointer of a Rust sampler points to.
struct State {
    sampler: Box<dyn CustomSampler>,
    name: CString,
    panicked: PanicSlot,
}

fn iface() -> *mut llama_sys::llama_sampler_i {
    static IFACE: OnceLock<llama_sys::llama_sampler_i> = OnceLock::new();
    let i = IFACE.get_or_init(|| llama_sys::llama_sampler_i {
        name: Some(name),
        accept: Some(accept),
        apply: Some(apply),
        reset: Some(reset),
        clone: Some(clone),
        free: Some(free),
        ..Default::default()
    });
    // llama.cpp never writes through the interface pointer.
    (i as *const llama_sys::llama_sampler_i).cast_mut()
}

/// Boxes a Rust sampler into a llama.cpp sampler owned by the caller (a chain).
pub(super) fn into_raw(sampler: Box<dyn CustomSampler>, panicked: PanicSlot) -> *mut llama_sys::llama_sampler {
    let name = CString::new(sampler.name().replace('\0', "")).unwrap_or_default();
    let state = Box::into_raw(Box::new(State { sampler, name, panicked }));
    // SAFETY: the interface is a static; `state` is a valid pointer whose ownership passes to
    // the new sampler and is reclaimed in `free`.
    unsafe { llama_sys::llama_sampler_init(iface(), state.cast()) }
}

/// Points a Rust sampler (if `s` is one) at a new panic slot; used after cloning a chain.
pub(super) fn repoint_panic_slot(s: *mut llama_sys::llama_sampler, slot: &PanicSlot) {
    // SAFETY: `s` is a live member of a chain; only samplers with our interface have a `State`.
    unsafe {
        if !s.is_null() && (*s).iface.cast_const() == iface().cast_const() {
            (*(*s).ctx.cast::<State>()).panicked = slot.clone();
        }
    }
}

/// # Safety
/// `smpl` must be a sampler created by `into_raw`, alive, and not used concurrently.
unsafe fn state<'a>(smpl: *const llama_sys::llama_sampler) -> &'a mut State {
    // SAFETY: per the contract, ctx is the `State` box from `into_raw`.
    unsafe { &mut *(*smpl).ctx.cast::<State>() }
}

/// Runs `f`, putting a panic's message in the chain's panic slot.
fn guarded(st: &mut State, f: impl FnOnce(&mut dyn CustomSampler)) {
    let sampler = &mut *st.sampler;
    if let Err(message) = crate::barrier::catch_panic(|| f(sampler)) {
        st.panicked.set(message);
    }
}

unsafe extern "C" fn name(smpl: *const llama_sys::llama_sampler) -> *const c_char {
    // SAFETY: called by llama.cpp on a live sampler of ours; the name lives in the state.
    unsafe { state(smpl) }.name.as_ptr()
}

unsafe extern "C" fn accept(smpl: *mut llama_sys::llama_sampler, token: llama_sys::llama_token) {
    // SAFETY: called by llama.cpp on a live sampler of ours, from the thread using the chain.
    let st = unsafe { state(smpl) };
    guarded(st, |s| s.accept(Token(token)));
}

unsafe extern "C" fn apply(smpl: *mut llama_sys::llama_sampler, cur_p: *mut llama_sys::llama_token_data_array) {
    // SAFETY: as in `accept`.
    let st = unsafe { state(smpl) };
    if cur_p.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a valid array exclusively for the duration of the call.
    let mut c = unsafe { Candidates::new(&mut *cur_p) };
    guarded(st, |s| s.apply(&mut c));
}

unsafe extern "C" fn reset(smpl: *mut llama_sys::llama_sampler) {
    // SAFETY: as in `accept`.
    let st = unsafe { state(smpl) };
    guarded(st, |s| s.reset());
}

unsafe extern "C" fn clone(smpl: *const llama_sys::llama_sampler) -> *mut llama_sys::llama_sampler {
    // SAFETY: as in `accept`.
    let st = unsafe { state(smpl) };
    match crate::barrier::catch_panic(|| st.sampler.clone_box()) {
        Ok(Some(copy)) => into_raw(copy, st.panicked.clone()),
        Ok(None) => std::ptr::null_mut(),
        Err(message) => {
            st.panicked.set(message);
            std::ptr::null_mut()
        }
    }
}

unsafe extern "C" fn free(smpl: *mut llama_sys::llama_sampler) {
    // SAFETY: llama.cpp calls `free` once, when the sampler is destroyed; the state box came
    // from `into_raw`. Dropping user code may panic: contain it.
    unsafe {
        let ctx = (*smpl).ctx.cast::<State>();
        if !ctx.is_null() {
            let boxed = Box::from_raw(ctx);
            let _ = crate::barrier::catch_panic(|| drop(boxed));
        }
    }
}
