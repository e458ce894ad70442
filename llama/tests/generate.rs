//! The high-level generator: streaming, stop strings, finish reasons, log-probabilities, prefix
//! reuse and the context-full policies, on the real models.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{both, small_ctx, smollm2};
use llama::{ChatMessage, ContextFull, FinishReason, GenerateError, GenerateParams, Piece, Sampler, SpecialSyntax};

fn run(ctx: &mut llama::Context, prompt: &str, params: &GenerateParams) -> (Vec<Piece>, String, FinishReason) {
    let mut sampler = Sampler::greedy();
    let mut gen = ctx.generate(prompt, &mut sampler, params).unwrap();
    let pieces: Vec<Piece> = gen.by_ref().map(Result::unwrap).collect();
    let text = gen.text().to_string();
    let reason = gen.finish_reason().unwrap();
    (pieces, text, reason)
}

#[test]
fn streamed_text_equals_final_text_and_length_finish() {
    for model in both() {
        let mut ctx = model.context(small_ctx()).unwrap();
        let (pieces, text, reason) = run(&mut ctx, "The history of Rome", &GenerateParams::default().max_tokens(20));
        assert_eq!(reason, FinishReason::Length);
        assert_eq!(pieces.iter().filter(|p| p.token.is_some()).count(), 20);
        assert_eq!(pieces.iter().map(|p| p.text.as_str()).collect::<String>(), text);
        assert!(!text.is_empty());
    }
}

#[test]
fn stop_strings_split_across_tokens_are_caught() {
    let model = smollm2();
    let mut ctx = model.context(small_ctx()).unwrap();
    let prompt = "List the planets of the solar system:";
    let (pieces, full, _) = run(&mut ctx, prompt, &GenerateParams::default().max_tokens(48));
    // A stop string made of the end of one token's text and the start of the next.
    let texts: Vec<&str> = pieces.iter().map(|p| p.text.as_str()).collect();
    let (i, stop) = texts
        .windows(2)
        .enumerate()
        .find_map(|(i, w)| {
            let (a, b) = (w[0].trim_start(), w[1]);
            (a.chars().count() >= 2 && b.chars().count() >= 2).then(|| {
                let tail: String = a.chars().rev().take(2).collect::<Vec<_>>().into_iter().rev().collect();
                let head: String = b.chars().take(2).collect();
                (i, tail + &head)
            })
        })
        .expect("two consecutive multi-character pieces");
    let expected_end = full.find(&stop).unwrap();
    assert!(expected_end <= texts[..=i].concat().len());

    let params = GenerateParams::default().max_tokens(48).stop([stop.clone()]);
    let (pieces, text, reason) = run(&mut ctx, prompt, &params);
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(text, full[..expected_end]);
    let streamed: String = pieces.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(streamed, text, "no partial stop string was ever emitted");
    assert!(!streamed.contains(&stop));
}

#[test]
fn eog_cancel_and_context_full_finish_reasons() {
    let model = smollm2();
    let mut ctx = model.context(small_ctx()).unwrap();
    let chat = model.apply_chat_template(&[ChatMessage::new("user", "Say just the word: yes")], true).unwrap();
    let (_, text, reason) =
        run(&mut ctx, &chat, &GenerateParams::default().special_syntax(SpecialSyntax::Tokens).max_tokens(64));
    assert_eq!(reason, FinishReason::Eog, "{text:?}");

    let flag = Arc::new(AtomicBool::new(true));
    let (pieces, _, reason) = run(&mut ctx, "Hello", &GenerateParams::default().cancel(flag));
    assert_eq!((pieces.len(), reason), (0, FinishReason::Cancelled));

    let mut small = model.context(small_ctx().n_ctx(256)).unwrap();
    let (pieces, _, reason) = run(&mut small, "Count: 1, 2, 3,", &GenerateParams::default().max_tokens(1000));
    assert_eq!(reason, FinishReason::ContextFull);
    assert!(pieces.len() > 200);

    let mut sampler = Sampler::greedy();
    let params = GenerateParams::default().max_tokens(1000).on_context_full(ContextFull::Error);
    let result: Result<Vec<_>, _> = small.generate("Count: 1, 2, 3,", &mut sampler, &params).unwrap().collect();
    assert!(matches!(result, Err(GenerateError::ContextFull(256))));

    let params = GenerateParams::default().max_tokens(400).on_context_full(ContextFull::Shift { keep: 4 });
    let (pieces, _, reason) = run(&mut small, "Count: 1, 2, 3,", &params);
    assert_eq!(reason, FinishReason::Length, "shifting lets generation run past the window");
    assert_eq!(pieces.iter().filter(|p| p.token.is_some()).count(), 400);

    let long = "word ".repeat(400);
    let mut sampler = Sampler::greedy();
    assert!(matches!(
        small.generate(&long, &mut sampler, &GenerateParams::default()),
        Err(GenerateError::PromptTooLong { n_ctx: 256, .. })
    ));
}

#[test]
fn logprobs_are_reported() {
    let model = smollm2();
    let mut ctx = model.context(small_ctx()).unwrap();
    let (pieces, _, _) = run(&mut ctx, "The sky is", &GenerateParams::default().max_tokens(8).logprobs(true));
    for p in pieces.iter().filter(|p| p.token.is_some()) {
        let lp = p.logprob.unwrap();
        assert!(lp <= 0.0 && lp > -20.0, "{lp}");
    }
    let (pieces, _, _) = run(&mut ctx, "The sky is", &GenerateParams::default().max_tokens(8));
    assert!(pieces.iter().all(|p| p.logprob.is_none()));
}

#[test]
fn follow_up_prompts_reuse_the_cached_prefix() {
    let model = smollm2();
    let mut ctx = model.context(small_ctx()).unwrap();
    let first = "The following is a story about a robot who learns to paint.";
    let mut sampler = Sampler::greedy();
    let gen = ctx.generate(first, &mut sampler, &GenerateParams::default().max_tokens(8)).unwrap();
    let first_timings = gen.timings();
    let reply = gen.collect_text().unwrap();
    assert_eq!(first_timings.prompt_decoded, first_timings.prompt_tokens);

    let second = format!("{first}{reply} Then");
    let params = GenerateParams::default().max_tokens(12);
    let mut gen = ctx.generate(&second, &mut sampler, &params).unwrap();
    let t = gen.timings();
    assert!(t.prompt_decoded < t.prompt_tokens / 2, "decoded {} of {}", t.prompt_decoded, t.prompt_tokens);
    let reused: String = gen.by_ref().map(|p| p.unwrap().text).collect();

    let mut fresh = model.context(small_ctx()).unwrap();
    let fresh_text = fresh.generate(&second, &mut sampler, &params).unwrap().collect_text().unwrap();
    assert_eq!(reused, fresh_text);

    // Any manual change to the cache disables reuse for the next call.
    ctx.clear_kv();
    let gen = ctx.generate(&second, &mut sampler, &params).unwrap();
    assert_eq!(gen.timings().prompt_decoded, gen.timings().prompt_tokens);
}
