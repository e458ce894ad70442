//! Arbitrary bytes as saved context state, whole and per sequence: refused, or loaded into a
//! cache that the next decode can use.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use llama::{Batch, Context, ContextParams, Token};

thread_local! {
    static CTX: RefCell<Context> = RefCell::new(
        llama_fuzz::full_model()
            .context(ContextParams::default().n_ctx(64).n_batch(64).n_seq_max(2).n_threads(1))
            .unwrap_or_else(|e| panic!("context: {e}")),
    );
}

fn decode_next(ctx: &mut Context, seq: i32) {
    let next = ctx.kv_seq_pos_max(seq).ok().flatten().map_or(Some(0), |p| p.checked_add(1));
    let mut batch = Batch::new(1, 1);
    if let Some(pos) = next {
        if batch.add(Token(1), pos, &[seq], true).is_ok() {
            let _ = ctx.decode(&batch);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    CTX.with_borrow_mut(|ctx| {
        if ctx.load_state(data).is_ok() {
            decode_next(ctx, 0);
        }
        ctx.clear_kv();
        if ctx.load_seq_state(1, data).is_ok() {
            decode_next(ctx, 1);
        }
        ctx.clear_kv();
    });
});
