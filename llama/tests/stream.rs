//! Generation as an async stream (feature `async`).
#![cfg(feature = "async")]

mod common;

use futures::executor::block_on;
use futures::StreamExt;
use llama::{FinishReason, GenerateParams, GenerationStream, Sampler};

#[test]
fn stream_matches_blocking_generation_and_hands_back_the_context() {
    let model = common::smollm2();
    let params = GenerateParams::default().max_tokens(24);
    let mut ctx = model.context(common::small_ctx()).unwrap();
    let expected = ctx.generate("Rust is", &mut Sampler::greedy(), &params).unwrap().collect_text().unwrap();

    let ctx = model.context(common::small_ctx()).unwrap();
    let mut stream = GenerationStream::spawn(ctx, Sampler::greedy(), "Rust is", params.clone());
    let text = block_on(async {
        let mut text = String::new();
        while let Some(piece) = stream.next().await {
            text += &piece.unwrap().text;
        }
        text
    });
    assert_eq!(text, expected);
    let outcome = block_on(stream.finish()).unwrap();
    assert_eq!(outcome.finish, Some(FinishReason::Length));
    assert_eq!(outcome.timings.generated, 24);
    // The returned context reuses its cache for a follow-up.
    let mut ctx = outcome.context;
    let mut sampler = outcome.sampler;
    let gen = ctx.generate(&format!("Rust is{text} And"), &mut sampler, &params).unwrap();
    assert!(gen.timings().prompt_decoded < gen.timings().prompt_tokens);
}

#[test]
fn finishing_early_cancels() {
    let model = common::smollm2();
    let ctx = model.context(common::small_ctx()).unwrap();
    let mut stream =
        GenerationStream::spawn(ctx, Sampler::greedy(), "Once upon", GenerateParams::default().max_tokens(400));
    let first: Vec<_> = block_on(stream.by_ref().take(3).collect::<Vec<_>>());
    assert_eq!(first.len(), 3);
    let outcome = block_on(stream.finish()).unwrap();
    assert_eq!(outcome.finish, Some(FinishReason::Cancelled));
    assert!(outcome.timings.generated < 400);
    // Dropping a stream mid-way does not hang or crash.
    let ctx = model.context(common::small_ctx()).unwrap();
    drop(GenerationStream::spawn(ctx, Sampler::greedy(), "Once upon", GenerateParams::default().max_tokens(400)));
}
