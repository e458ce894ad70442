//! Helpers of the engine tests: a greedy engine, a sampler that never ends, what a completion
//! produced, and the solo run it is compared with.

use llama::engine::{Completion, Engine, EngineParams, Event};
use llama::{FinishReason, FlashAttention, GenerateParams, Sampler, Token};

use super::smollm2;

/// One thread everywhere: greedy tokens only match across programs at the same thread count.
pub fn engine(slots: usize, n_ctx: usize) -> Engine {
    Engine::new(smollm2(), EngineParams::default().slots(slots).n_ctx(n_ctx).threads(1)).unwrap()
}

/// Greedy, with every end-of-generation token banned: runs to its token limit.
pub fn never_ends() -> Sampler {
    let model = smollm2();
    let vocab = model.vocab();
    let eog: Vec<(Token, f32)> = vocab.tokens().filter(|&t| vocab.is_eog(t)).map(|t| (t, f32::NEG_INFINITY)).collect();
    Sampler::chain().logit_bias(model, &eog).unwrap().greedy_pick()
}

/// What one completion produced: its tokens, how it ended, and the `Started` report.
#[derive(Debug, Default)]
pub struct Outcome {
    pub tokens: Vec<Token>,
    pub text: String,
    pub finish: Option<FinishReason>,
    pub cached: Option<usize>,
    pub completion_tokens: usize,
}

pub fn drain(completion: Completion) -> Vec<Outcome> {
    let mut out: Vec<Outcome> = Vec::new();
    let mut cached = None;
    for event in completion {
        let at = |out: &mut Vec<Outcome>, i: usize| {
            if out.len() <= i {
                out.resize_with(i + 1, Outcome::default);
            }
        };
        match event {
            Event::Started { cached_tokens, .. } => cached = Some(cached_tokens),
            Event::Piece { index, piece } => {
                at(&mut out, index);
                out[index].tokens.extend(piece.token);
                out[index].text.push_str(&piece.text);
            }
            Event::Done { index, finish, usage, .. } => {
                at(&mut out, index);
                out[index].finish = Some(finish);
                out[index].completion_tokens = usage.completion_tokens;
            }
            Event::Error { message, .. } => panic!("request failed: {message}"),
            _ => {}
        }
    }
    for o in &mut out {
        o.cached = cached;
    }
    out
}

/// The tokens `sampler` (greedy) picks for `prompt` alone through `Context::generate`, with the top log-probabilities at
/// each step (to tell a near-tie from a real difference).
pub fn solo(
    mut sampler: Sampler,
    prompt: &str,
    max_tokens: usize,
    fa: FlashAttention,
) -> (Vec<Token>, Vec<Vec<(Token, f32)>>) {
    let model = smollm2();
    let params = super::small_ctx().n_ctx(1024).flash_attention(fa);
    let mut ctx = model.context(params).unwrap();
    let params = GenerateParams::default().max_tokens(max_tokens).top_logprobs(SOLO_TOP);
    let mut tokens = Vec::new();
    let mut tops = Vec::new();
    for piece in ctx.generate(prompt, &mut sampler, &params).unwrap() {
        let piece = piece.unwrap();
        if let Some(t) = piece.token {
            tokens.push(t);
            tops.push(piece.top_logprobs);
        }
    }
    (tokens, tops)
}

/// How many of the solo run's best tokens a parting engine token is looked up in: near-ties can
/// involve more than two.
pub const SOLO_TOP: usize = 5;

/// A close call: the solo run's two best tokens differ by less than this (nats). Without flash
/// attention, attention is a matrix product whose kernel (and rounding) depends on how many rows
/// the batch has; and with it, a cache computed in other chunks than the solo run's (a preempted
/// request read again, a prompt beside others) rounds differently: a wider band of close calls
/// can flip.
pub const NEAR_TIE_BATCHED: f32 = 0.5;

/// `Ok(true)` if identical, `Ok(false)` if they part where the engine's token was within `near_tie`
/// of the solo run's pick, `Err` if not.
pub fn same_as_solo(
    sampler: Sampler,
    prompt: &str,
    max_tokens: usize,
    got: &[Token],
    fa: FlashAttention,
    near_tie: f32,
) -> Result<bool, String> {
    let (want, tops) = solo(sampler, prompt, max_tokens, fa);
    match want.iter().zip(got).position(|(a, b)| a != b) {
        None if want.len() == got.len() => Ok(true),
        None => Err(format!("{prompt:?}: lengths differ, {} vs {}", want.len(), got.len())),
        Some(k) => {
            let top = &tops[k];
            let taken = top.iter().position(|&(t, _)| t == got[k]);
            match taken.map(|i| (i, top[0].1 - top[i].1)) {
                Some((rank, gap)) if gap < near_tie => {
                    eprintln!("{prompt:?} parts from solo at token {k} of {}: rank {rank}, gap {gap:.4}", want.len());
                    Ok(false)
                }
                found => Err(format!(
                    "{prompt:?} parts from solo at token {k}: the engine's token (rank, gap) in solo's top {SOLO_TOP}: {found:?}"
                )),
            }
        }
    }
}
