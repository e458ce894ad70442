//! Speculative decoding is exact: with the same sampler chain (greedy, or top-k + top-p +
//! temperature with a seeded draw) its output equals plain generation's, and the KV cache ends as
//! after plain decoding.

mod common;

use std::sync::OnceLock;

use common::{max_rel_diff, scratch, small_ctx, smollm2};
use llama::speculative::{CopyDrafter, DraftModel, SpeculativeDecoder, SpeculativeError};
use llama::Logits;
use llama::Output;
use llama::{
    AddSpecial, Batch, ContextParams, FinishReason, Ftype, GenerateParams, Model, QuantizeParams, Sampler,
    SpecialSyntax, Token,
};

const PROMPTS: [&str; 10] = [
    "Repeat exactly: the quick brown fox jumps over the lazy dog. Again: the quick brown fox",
    "def add(a, b):\n    return a + b\n\ndef add(a, b):\n",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4,",
    "Roses are red, violets are blue. Roses are red,",
    "The capital of France is",
    "List: apples, oranges, pears. List again: apples,",
    "Once upon a time there was a",
    "for i in range(10):\n    print(i)\nfor i in range(10):\n",
    "Hello world! Hello world! Hello",
    "The meaning of life is",
];

/// One thread per context: the tests run in parallel on two cores, and ggml's spinning
/// barriers make oversubscription very slow.
fn params() -> ContextParams {
    small_ctx().n_ctx(1024).n_batch(512).n_threads(1)
}

/// The ten prompts plus their first halves: twenty.
fn prompts() -> impl Iterator<Item = &'static str> {
    PROMPTS.iter().copied().chain(PROMPTS.iter().map(|p| &p[..p.len() / 2]))
}

fn plain_greedy(model: &Model, prompt: &[Token], n: usize) -> Vec<Token> {
    plain(model, prompt, n, &mut Sampler::greedy())
}

fn plain(model: &Model, prompt: &[Token], n: usize, sampler: &mut Sampler) -> Vec<Token> {
    let mut ctx = model.context(params()).unwrap();
    let gen = ctx.generate_tokens(prompt, sampler, &GenerateParams::default().max_tokens(n)).unwrap();
    gen.filter_map(|p| p.unwrap().token).collect()
}

/// A sampling chain as applications use it: top-k, top-p, temperature, seeded draw.
fn chain(seed: u32) -> Sampler {
    Sampler::chain().top_k(40).top_p(0.9).temp(0.8).dist(seed)
}

/// SmolLM2 re-quantized to F16 by the crate: a target with the draft's vocabulary but other
/// weights.
fn smollm2_f16() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let dir = scratch("spec-f16");
        let out = dir.join("smollm2-f16.gguf");
        llama::quantize(
            common::models::default_model().unwrap(),
            &out,
            QuantizeParams::new(Ftype::F16).allow_requantize(true),
        )
        .unwrap();
        // Loaded without mmap, so the 260 MB file can go right away.
        let model = Model::builder(&out).mmap(false).load().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        model
    })
}

/// Greedy speculation with the n-gram drafter reproduces plain greedy on 20 prompts.
fn ngram_matches_plain(model: &Model) {
    let mut total_accepted = 0;
    for text in prompts() {
        let prompt = model.vocab().tokenize(text, AddSpecial::Yes).unwrap();
        let expected = plain_greedy(model, &prompt, 40);
        let ctx = model.context(params()).unwrap();
        let mut spec = SpeculativeDecoder::new(ctx, Box::new(CopyDrafter::default()), 6).unwrap().fixed(6);
        let got = spec.generate(&prompt, 40, &mut Sampler::greedy()).unwrap();
        assert_eq!(got, expected, "{text:?}");
        total_accepted += spec.stats().accepted;
    }
    assert!(total_accepted > 0, "copy-heavy prompts must accept some drafts");
}

#[test]
fn ngram_greedy_equals_plain_greedy() {
    ngram_matches_plain(smollm2());
}

/// Gemma-3 is Q4_K_M: with weight repacking on, llama.cpp's CPU backend uses one kernel for
/// single-token decodes and another for batches, and near-tied greedy choices flip between
/// them (3 of these 20 prompts diverge). With repacking off every batch shape runs the same
/// kernels and speculation is token-identical.
#[test]
fn ngram_greedy_equals_plain_greedy_on_gemma3() {
    let path = common::models::ensure(&common::models::GEMMA3).unwrap();
    ngram_matches_plain(&Model::builder(&path).repack(false).load().unwrap());
}

#[test]
fn draft_model_greedy_equals_plain_greedy_and_kv_matches() {
    let target = smollm2_f16();
    let draft_model = smollm2();
    let mut accepted = 0;
    let mut drafted = 0;
    for text in prompts() {
        let prompt = target.vocab().tokenize(text, AddSpecial::Yes).unwrap();
        let expected = plain_greedy(target, &prompt, 32);
        let tctx = target.context(params()).unwrap();
        let draft = DraftModel::new(draft_model.context(params()).unwrap(), &tctx).unwrap();
        let mut spec = SpeculativeDecoder::new(tctx, Box::new(draft), 4).unwrap().fixed(4);
        let got = spec.generate(&prompt, 32, &mut Sampler::greedy()).unwrap();
        assert_eq!(got, expected, "{text:?}");
        accepted += spec.stats().accepted;
        drafted += spec.stats().drafted;

        // The target's cache is as if prompt + output had been decoded token by token.
        let all: Vec<Token> = prompt.iter().chain(&got).copied().collect();
        assert_eq!(spec.target().kv_seq_pos_max(0).unwrap(), Some(all.len() - 1));
        let mut plain = target.context(params()).unwrap();
        let mut batch = Batch::new(512, 1);
        batch.add_sequence(&prompt, 0, 0, Logits::Want).unwrap();
        plain.decode(&batch).unwrap();
        for (i, &t) in got.iter().enumerate() {
            batch.clear();
            batch.add(t, prompt.len() + i, &[0], Logits::Want).unwrap();
            plain.decode(&batch).unwrap();
        }
        // Batched verification rounds differently from single-token decodes (~1e-3 relative
        // on this F16 model), so "equal" means: same next token, logits within 1e-2.
        let (a, b) = (spec.target().logits(Output::Last).unwrap(), plain.logits(Output::Last).unwrap());
        let diff = max_rel_diff(a, b);
        assert!(diff < 1e-2, "{text:?}: next-token logits differ by {diff}");
        assert_eq!(common::argmax(a), common::argmax(b), "{text:?}");
    }
    assert!(
        accepted * 2 > drafted,
        "Q4_1 drafting for F16 of the same model accepts most drafts: {accepted}/{drafted}"
    );
}

#[test]
fn adaptive_mode_is_exact_too() {
    let model = smollm2();
    let mut drafted = 0;
    for text in &PROMPTS[..4] {
        let prompt = model.vocab().tokenize(text, AddSpecial::Yes).unwrap();
        let expected = plain_greedy(model, &prompt, 48);
        let ctx = model.context(params()).unwrap();
        let mut spec = SpeculativeDecoder::new(ctx, Box::new(CopyDrafter::default()), 8).unwrap();
        assert_eq!(spec.generate(&prompt, 48, &mut Sampler::greedy()).unwrap(), expected);
        drafted += spec.stats().drafted;
    }
    assert!(drafted > 0, "the adaptive controller never drafted, so nothing was tested");
}

/// With a sampling chain the drafts are checked against the chain's own draws, so the output is
/// plain sampling's with the same seed: on 20 prompts × 3 seeds with the n-gram drafter, and with
/// a draft model (here the F16 re-quantization drafting for Q4_1, whose batch rows equal its
/// single-token rows).
#[test]
fn sampled_speculation_equals_plain_sampling_with_the_same_chain() {
    let model = smollm2();
    let (mut accepted, mut differs) = (0, 0);
    for seed in 1..=3 {
        for text in prompts() {
            let prompt = model.vocab().tokenize(text, AddSpecial::Yes).unwrap();
            let expected = plain(model, &prompt, 40, &mut chain(seed));
            differs += usize::from(expected != plain_greedy(model, &prompt, 40));
            let ctx = model.context(params()).unwrap();
            let mut spec = SpeculativeDecoder::new(ctx, Box::new(CopyDrafter::default()), 6).unwrap().fixed(6);
            assert_eq!(spec.generate(&prompt, 40, &mut chain(seed)).unwrap(), expected, "seed {seed}: {text:?}");
            accepted += spec.stats().accepted;
        }
    }
    assert!(accepted > 0, "nothing drafted was kept, so nothing was tested");
    assert!(differs > 20, "the chain must sample, not act greedily: {differs} of 60 differ from greedy");

    let mut accepted = 0;
    for text in &PROMPTS[..5] {
        let prompt = model.vocab().tokenize(text, AddSpecial::Yes).unwrap();
        let expected = plain(model, &prompt, 24, &mut chain(7));
        let tctx = model.context(params()).unwrap();
        let draft = DraftModel::new(smollm2_f16().context(params()).unwrap(), &tctx).unwrap();
        let mut spec = SpeculativeDecoder::new(tctx, Box::new(draft), 4).unwrap().fixed(4);
        assert_eq!(spec.generate(&prompt, 24, &mut chain(7)).unwrap(), expected, "{text:?}");
        accepted += spec.stats().accepted;
    }
    assert!(accepted > 0, "the draft model's proposals were never kept");
}

/// The context comes back with its cache holding prompt and output, known to the prefix reuse
/// of plain generation: a chat goes on without re-reading what speculation decoded.
#[test]
fn the_context_comes_back_for_plain_generation() {
    let model = smollm2();
    let prompt = model.vocab().tokenize(PROMPTS[2], AddSpecial::Yes).unwrap();
    let ctx = model.context(params()).unwrap();
    let mut spec = SpeculativeDecoder::new(ctx, Box::new(CopyDrafter::default()), 6).unwrap();
    let got = spec.generate(&prompt, 16, &mut Sampler::greedy()).unwrap();
    let mut ctx = spec.into_inner();
    let all: Vec<Token> = prompt.iter().chain(&got).copied().collect();
    assert_eq!(ctx.cached_tokens(0), Some(&all[..]));
    let mut more = all.clone();
    more.extend(model.vocab().tokenize(" and", AddSpecial::No).unwrap());
    let mut greedy = Sampler::greedy();
    let mut gen = ctx.generate_tokens(&more, &mut greedy, &GenerateParams::default().max_tokens(4)).unwrap();
    assert!(gen.next().is_some());
    assert_eq!(gen.timings().prompt_decoded, more.len() - all.len(), "only the new tokens are read");
}

#[test]
fn bad_inputs_are_errors() {
    let model = smollm2();
    let ctx = model.context(params()).unwrap();
    let gemma_ctx = common::gemma3().context(params()).unwrap();
    assert!(matches!(DraftModel::new(gemma_ctx, &ctx), Err(SpeculativeError::VocabMismatch(_))));
    assert!(matches!(
        SpeculativeDecoder::new(model.context(params()).unwrap(), Box::new(CopyDrafter::default()), 0),
        Err(SpeculativeError::InvalidParam(_))
    ));
    let mut spec =
        SpeculativeDecoder::new(model.context(small_ctx().n_ctx(256)).unwrap(), Box::new(CopyDrafter::default()), 4)
            .unwrap();
    let long = model.vocab().tokenize(&"word ".repeat(200), AddSpecial::Yes).unwrap();
    assert!(matches!(spec.generate(&long, 100, &mut Sampler::greedy()), Err(SpeculativeError::ContextTooSmall { .. })));
    let short = model.vocab().tokenize("hi", AddSpecial::Yes).unwrap();
    assert!(matches!(
        spec.generate(&short, 4, &mut Sampler::chain()),
        Err(SpeculativeError::Sample(llama::SampleError::EmptyChain))
    ));
}

#[test]
fn generate_text_streams_like_plain_generation() {
    let model = smollm2();
    let prompt = model.vocab().tokenize(PROMPTS[3], AddSpecial::Yes).unwrap();
    let expected = plain_greedy(model, &prompt, 24);
    let expected_text = model.vocab().detokenize(&expected).unwrap();
    let mut spec = SpeculativeDecoder::new(model.context(params()).unwrap(), Box::new(CopyDrafter::default()), 6)
        .unwrap()
        .fixed(6);

    // Max tokens: the streamed pieces concatenate to the plain text; finish reason Length.
    let params24 = GenerateParams::default().max_tokens(24);
    let mut greedy = Sampler::greedy();
    let mut gen = spec.generate_text(&prompt, &mut greedy, &params24).unwrap();
    let mut streamed = String::new();
    let mut tokens = Vec::new();
    for piece in gen.by_ref() {
        let piece = piece.unwrap();
        streamed.push_str(&piece.text);
        tokens.extend(piece.token);
    }
    assert_eq!(gen.finish_reason(), Some(FinishReason::Length));
    assert_eq!(gen.text(), streamed);
    assert_eq!(tokens, expected);
    assert_eq!(streamed, expected_text);

    // A stop string inside the plain text (spanning drafted tokens) ends generation before it;
    // nothing of it is streamed, and the cache holds exactly what was generated.
    let at = expected_text.len() / 2;
    let stop: String = expected_text[at..].chars().take(6).collect();
    let stop = stop.trim_start().to_string();
    let cut = expected_text.find(&stop).unwrap();
    let params_stop = GenerateParams::default().max_tokens(24).stop([stop.clone()]);
    let mut greedy = Sampler::greedy();
    let mut gen = spec.generate_text(&prompt, &mut greedy, &params_stop).unwrap();
    let mut streamed = String::new();
    for piece in gen.by_ref() {
        streamed.push_str(&piece.unwrap().text);
    }
    assert_eq!(gen.finish_reason(), Some(FinishReason::Stop));
    assert_eq!(streamed, expected_text[..cut], "stop {stop:?}");
    let generated = spec.stats().generated;
    assert_eq!(spec.target().kv_seq_pos_max(0).unwrap(), Some(prompt.len() + generated - 1));

    // Cancellation before the first token.
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut greedy = Sampler::greedy();
    let mut gen = spec.generate_text(&prompt, &mut greedy, &GenerateParams::default().cancel(flag)).unwrap();
    assert!(gen.next().is_none());
    assert_eq!(gen.finish_reason(), Some(FinishReason::Cancelled));
}

#[test]
fn end_of_generation_ends_speculative_generation() {
    let model = smollm2();
    // A chat turn the model closes by itself well within the budget.
    let text = model.apply_chat_template(&[llama::ChatMessage::new("user", "Say only the word yes.")], true).unwrap();
    let prompt = model.vocab().tokenize_with(&text, AddSpecial::Yes, SpecialSyntax::Tokens).unwrap();
    let expected = plain_greedy(model, &prompt, 64);
    assert!(expected.len() < 64, "the model should end its turn");
    let mut spec =
        SpeculativeDecoder::new(model.context(params()).unwrap(), Box::new(CopyDrafter::default()), 4).unwrap();
    let mut greedy = Sampler::greedy();
    let mut gen = spec.generate_text(&prompt, &mut greedy, &GenerateParams::default().max_tokens(64)).unwrap();
    let tokens: Vec<Token> = gen.by_ref().filter_map(|p| p.unwrap().token).collect();
    assert_eq!(gen.finish_reason(), Some(FinishReason::Eog));
    assert_eq!(tokens, expected);
}
