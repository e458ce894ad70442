//! Inputs at the edges of the public API that once panicked, overflowed or aborted: each is now
//! an `Err` or clamped.

mod common;

use llama::speculative::{CopyDrafter, DraftModel, Drafter, SpeculativeDecoder};
use llama::{AddSpecial, Batch, BatchError, Context, Logits, Output, Penalties, Sampler, Token};

#[test]
fn absurd_batch_sizes_are_errors() {
    assert!(matches!(Batch::try_new(usize::MAX, 1), Err(BatchError::TooLarge { .. })));
    assert!(matches!(Batch::new_embeddings(1 << 40, 1 << 40, 1), Err(BatchError::TooLarge { .. })));
    assert!(matches!(Batch::new_embeddings(i32::MAX as usize, i32::MAX as usize, 1), Err(BatchError::TooLarge { .. })));
    // 32 TiB: fits the index types, cannot be allocated.
    let err = Batch::new_embeddings(1 << 20, 1 << 23, 1).unwrap_err();
    assert!(matches!(err, BatchError::AllocFailed { .. }), "{err}");
    // Near i32::MAX entries: refused before anything is allocated or touched.
    assert!(matches!(Batch::try_new(i32::MAX as usize, 1), Err(BatchError::TooLarge { .. })));
    // The largest batch allowed costs only the memory it touches (pages are zeroed lazily).
    let big = Batch::try_new(llama::MAX_BATCH, 1).unwrap();
    assert_eq!(big.capacity(), llama::MAX_BATCH);
    drop(big);
    // More sequence ids per entry than llama.cpp has sequences is clamped, not allocated.
    let batch = Batch::try_new(4, usize::MAX).unwrap();
    assert_eq!(batch.capacity(), 4);
}

#[test]
fn speculative_decoder_refuses_a_draft_longer_than_the_batch() {
    let ctx = common::smollm2().context(common::small_ctx()).unwrap();
    let err = SpeculativeDecoder::new(ctx, Box::new(CopyDrafter::default()), usize::MAX).unwrap_err();
    assert!(err.to_string().contains("n_batch"), "{err}");
}

#[test]
fn a_draft_model_given_no_history_is_an_error() {
    let model = common::smollm2();
    let target = model.context(common::small_ctx()).unwrap();
    let mut draft = DraftModel::new(model.context(common::small_ctx()).unwrap(), &target).unwrap();
    assert!(draft.draft(&[], 4).is_err());
    assert!(draft.draft(&[llama::Token(1)], usize::MAX).is_err());
}

/// A small SmolLM2 context with "Hello" decoded in sequence 0.
fn hello_context() -> Context {
    let model = common::smollm2();
    let mut ctx = model.context(common::small_ctx()).unwrap();
    common::prefill(&mut ctx, &model.vocab().tokenize("Hello", AddSpecial::Yes).unwrap(), 0);
    ctx
}

#[test]
fn a_sequence_shifted_to_the_last_position_refuses_the_next_token() {
    // Found by the KV property test: after a shift, `pos_max + 1` may not fit `llama_pos` (i32).
    let mut ctx = hello_context();
    let last = ctx.kv_seq_pos_max(0).unwrap().unwrap();
    ctx.kv_seq_add(0, .., i32::MAX - i32::try_from(last).unwrap()).unwrap();
    let pos = ctx.kv_seq_pos_max(0).unwrap().unwrap();
    assert_eq!(pos, i32::MAX as usize);
    let mut batch = Batch::new(1, 1);
    let err = batch.add(Token(1), pos + 1, &[0], Logits::Want).unwrap_err();
    assert!(matches!(err, BatchError::PositionTooLarge(p) if p == pos + 1), "{err}");
}

#[test]
fn a_huge_penalty_window_does_not_allocate_it() {
    // llama.cpp allocates the whole window up front; i32::MAX tokens would be 8 GiB.
    let ctx = hello_context();
    let mut s = Sampler::chain().penalties(Penalties::default().last_n(usize::MAX).repeat(1.1)).greedy_pick();
    s.sample(&ctx, Output::Last).unwrap();
}

#[cfg(feature = "json-schema")]
#[test]
fn a_deeply_nested_schema_is_refused_not_a_stack_overflow() {
    // Run on a big stack so building and dropping the value itself is safe.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            let mut schema = serde_json::json!({ "type": "string" });
            for _ in 0..2_000 {
                schema = serde_json::json!({ "type": "array", "items": schema });
            }
            let err = llama::json_schema_to_grammar(&schema).unwrap_err();
            assert!(err.to_string().contains("nested"), "{err}");
        })
        .unwrap()
        .join()
        .unwrap();
}
