//! Every built-in sampler's effect on candidate arrays the tests build, Rust samplers, grammars,
//! and seeded determinism on the real model.

mod common;

use common::{prefill, small_ctx, smollm2};
use llama::Logits;
use llama::Output;
use llama::{
    AdaptiveP, AddSpecial, Candidates, CustomSampler, Dry, Mirostat, MirostatV2, Penalties, SampleError, Sampler,
    SamplerBuildError, SpecialSyntax, TempExt, Token, TokenData, TokenDataArray, Xtc,
};

/// Candidates 0..n with the given probabilities (as log-probabilities).
fn probs(p: &[f32]) -> TokenDataArray {
    TokenDataArray::from_logits(&p.iter().map(|x| x.ln()).collect::<Vec<_>>())
}

fn ids(c: &TokenDataArray) -> Vec<i32> {
    let mut v: Vec<i32> = c.as_slice().iter().map(|t| t.id.0).collect();
    v.sort();
    v
}

fn run(mut s: Sampler, mut c: TokenDataArray) -> TokenDataArray {
    s.apply(&mut c).unwrap();
    c
}

const P: [f32; 4] = [0.5, 0.3, 0.15, 0.05];

#[test]
fn greedy_picks_the_maximum() {
    let c = run(Sampler::greedy(), TokenDataArray::from_logits(&[0.1, 2.0, 1.9, -1.0]));
    assert_eq!(c.selected().map(|t| t.id), Some(Token(1)));
}

#[test]
fn top_k_top_p_min_p_typical_filter() {
    assert_eq!(ids(&run(Sampler::chain().top_k(2), probs(&P))), [0, 1]);
    assert_eq!(ids(&run(Sampler::chain().top_k(0), probs(&P))), [0, 1, 2, 3], "k <= 0 keeps all");
    assert_eq!(ids(&run(Sampler::chain().top_p(0.8), probs(&P))), [0, 1]);
    assert_eq!(ids(&run(Sampler::chain().top_p(0.81), probs(&P))), [0, 1, 2]);
    // min-p 0.2: keep p >= 0.2 * 0.5 = 0.1
    assert_eq!(ids(&run(Sampler::chain().min_p(0.2), probs(&P))), [0, 1, 2]);
    // Typical keeps the tokens closest to the entropy; with a peaked distribution it drops
    // the most surprising tail first.
    let typical = run(Sampler::chain().typical(0.5), probs(&P));
    assert!(typical.as_slice().len() < 4 && !ids(&typical).contains(&3), "{:?}", ids(&typical));
}

#[test]
fn temperature_scales_logits() {
    let c = run(Sampler::chain().temp(0.5), TokenDataArray::from_logits(&[1.0, 2.0, 4.0]));
    let mut logits: Vec<f32> = c.as_slice().iter().map(|t| t.logit).collect();
    logits.sort_by(f32::total_cmp);
    assert_eq!(logits, [2.0, 4.0, 8.0]);
    // temp 0 keeps only the best
    let c = run(Sampler::chain().temp(0.0), TokenDataArray::from_logits(&[1.0, 2.0, 4.0]));
    let finite: Vec<i32> = c.as_slice().iter().filter(|t| t.logit.is_finite()).map(|t| t.id.0).collect();
    assert_eq!(finite, [2]);
    // Dynamic temperature with delta 0 is plain temperature.
    let ext =
        run(Sampler::chain().temp_ext(TempExt::default().temp(0.5)), TokenDataArray::from_logits(&[1.0, 2.0, 4.0]));
    let mut l2: Vec<f32> = ext.as_slice().iter().map(|t| t.logit).collect();
    l2.sort_by(f32::total_cmp);
    assert_eq!(l2, [2.0, 4.0, 8.0]);
}

#[test]
fn xtc_removes_top_choices() {
    // Probability 1: always cut every token above 0.1 except the least likely of them (0.15).
    let c = run(Sampler::chain().xtc(Xtc::default().probability(1.0).seed(7)).greedy_pick(), probs(&P));
    assert_eq!(c.selected().map(|t| t.id), Some(Token(2)));
    // Probability 0: never.
    let c = run(Sampler::chain().xtc(Xtc::default().seed(7)).greedy_pick(), probs(&P));
    assert_eq!(c.selected().map(|t| t.id), Some(Token(0)));
}

#[test]
fn top_n_sigma_keeps_tokens_near_the_top() {
    let logits = [10.0, 9.5, 0.0, -1.0, -2.0, -3.0];
    let c = run(Sampler::chain().top_n_sigma(1.0), TokenDataArray::from_logits(&logits));
    let kept: Vec<i32> = c.as_slice().iter().filter(|t| t.logit.is_finite()).map(|t| t.id.0).collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
}

#[test]
fn dist_is_seeded_and_follows_probabilities() {
    let draws = |seed: u32| -> Vec<i32> {
        let mut s = Sampler::chain().dist(seed);
        (0..2000)
            .map(|_| {
                let mut c = probs(&[0.7, 0.3]);
                s.apply(&mut c).unwrap();
                c.selected().unwrap().id.0
            })
            .collect()
    };
    let a = draws(1);
    assert_eq!(a, draws(1), "same seed, same draws");
    assert_ne!(a, draws(2), "different seeds differ");
    let zeros = a.iter().filter(|&&t| t == 0).count() as f64 / a.len() as f64;
    assert!((zeros - 0.7).abs() < 0.04, "frequency {zeros}");
    assert_eq!(Sampler::chain().dist(99).seed(), 99);
}

#[test]
fn mirostat_and_adaptive_p_select() {
    let model = smollm2();
    // A very low target surprise makes mirostat pick the most likely token.
    let c = run(Sampler::chain().mirostat(model, Mirostat::default().seed(3).tau(0.01)), probs(&[0.9, 0.05, 0.05]));
    assert_eq!(c.selected().map(|t| t.id), Some(Token(0)));
    let c = run(Sampler::chain().mirostat_v2(MirostatV2::default().seed(3).tau(0.01)), probs(&[0.9, 0.05, 0.05]));
    assert_eq!(c.selected().map(|t| t.id), Some(Token(0)));
    let c = run(Sampler::chain().adaptive_p(AdaptiveP::default().target(0.3).seed(3)), probs(&[0.6, 0.3, 0.1]));
    assert!(c.selected().is_some());
}

#[test]
fn penalties_punish_accepted_tokens() {
    let mut s = Sampler::chain().penalties(Penalties::default().repeat(2.0).frequency(0.5).presence(0.5));
    s.accept(Token(1)).unwrap();
    s.accept(Token(1)).unwrap();
    let mut c = TokenDataArray::from_logits(&[1.0, 4.0, 1.0]);
    s.apply(&mut c).unwrap();
    let l1 = c.as_slice().iter().find(|t| t.id == Token(1)).unwrap().logit;
    // repeat: 4 / 2 = 2; frequency 2 * 0.5 = 1; presence 0.5 → 0.5
    assert!((l1 - 0.5).abs() < 1e-6, "{l1}");
    let l0 = c.as_slice().iter().find(|t| t.id == Token(0)).unwrap().logit;
    assert_eq!(l0, 1.0);
    s.reset();
    let c = run(s, TokenDataArray::from_logits(&[1.0, 4.0, 1.0]));
    assert_eq!(c.as_slice()[1].logit, 4.0, "reset clears the history");
}

#[test]
fn dry_penalises_extending_a_repeat() {
    let model = smollm2();
    let v = model.vocab();
    let t = |s: &str| v.tokenize(s, AddSpecial::No).unwrap()[0];
    let (a, b, c, d) = (t(" apple"), t(" banana"), t(" cherry"), t(" dog"));
    let mut s = Sampler::chain()
        .dry(model, Dry::default().multiplier(1.0).base(2.0).allowed_length(1).breakers(vec!["\n".into()]))
        .unwrap();
    for tok in [a, b, c, d, a, b] {
        s.accept(tok).unwrap();
    }
    let mut cands =
        TokenDataArray::new(vec![TokenData { id: c, logit: 5.0, p: 0.0 }, TokenData { id: d, logit: 5.0, p: 0.0 }]);
    s.apply(&mut cands).unwrap();
    let logit = |id| cands.as_slice().iter().find(|x| x.id == id).unwrap().logit;
    assert!(logit(c) < 5.0, "continuing 'apple banana' with 'cherry' repeats: penalised");
    assert_eq!(logit(d), 5.0);
    assert_eq!(
        Sampler::chain().dry(model, Dry::default().breakers(vec!["a\0b".into()])).err(),
        Some(SamplerBuildError::NulByte)
    );
}

#[test]
fn logit_bias_shifts_and_bans() {
    let model = smollm2();
    let mut s =
        Sampler::chain().logit_bias(model, &[(Token(2), 10.0), (Token(0), f32::NEG_INFINITY)]).unwrap().greedy_pick();
    let mut c = TokenDataArray::from_logits(&[5.0, 4.0, 0.0]);
    s.apply(&mut c).unwrap();
    assert_eq!(c.selected().map(|t| t.id), Some(Token(2)));
    assert_eq!(
        Sampler::chain().logit_bias(model, &[(Token(-1), 1.0)]).err(),
        Some(SamplerBuildError::InvalidToken(-1))
    );
}

fn full_vocab() -> TokenDataArray {
    TokenDataArray::from_logits(&vec![0.0; smollm2().vocab().n_tokens()])
}

#[test]
fn grammar_constrains_and_bad_grammars_are_errors() {
    let model = smollm2();
    let v = model.vocab();
    let mut s = Sampler::chain().grammar(model, r#"root ::= "yes" | "no""#, "root").unwrap();
    let mut c = full_vocab();
    s.apply(&mut c).unwrap();
    let allowed: Vec<Token> = c.as_slice().iter().filter(|t| t.logit.is_finite()).map(|t| t.id).collect();
    let yes = v.tokenize("yes", AddSpecial::No).unwrap();
    assert!(allowed.contains(&yes[0]));
    assert!(!allowed.contains(&v.tokenize("hello", AddSpecial::No).unwrap()[0]));
    assert!(allowed.len() < 20, "{} tokens allowed", allowed.len());
    // A token the grammar forbids is an error, not an abort.
    assert_eq!(s.accept(v.tokenize("hello", AddSpecial::No).unwrap()[0]), Err(SampleError::Rejected));

    for bad in [r#"root ::= "unterminated"#, "root ::= undefined_rule", r#"root ::= root "a""#, "= ::= ::="] {
        match Sampler::chain().grammar(model, bad, "root") {
            Err(SamplerBuildError::Grammar(reason)) => assert!(!reason.is_empty(), "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert!(matches!(
        Sampler::chain().grammar(model, r#"root ::= "a""#, "missing_root"),
        Err(SamplerBuildError::Grammar(_))
    ));
}

#[test]
fn lazy_grammar_waits_for_its_trigger() {
    let model = smollm2();
    let v = model.vocab();
    let trigger = v.tokenize_with("<|im_start|>", AddSpecial::No, SpecialSyntax::Tokens).unwrap();
    assert_eq!(trigger.len(), 1);
    // The grammar sees the output from the trigger token on, so it starts with the trigger.
    let gbnf = r#"root ::= "<|im_start|>" "yes""#;
    let mut s = Sampler::chain().grammar_lazy(model, gbnf, "root", &[], &trigger).unwrap();
    let count = |s: &mut Sampler| {
        let mut c = full_vocab();
        s.apply(&mut c).unwrap();
        c.as_slice().iter().filter(|t| t.logit.is_finite()).count()
    };
    assert_eq!(count(&mut s), v.n_tokens(), "unconstrained before the trigger");
    s.accept(trigger[0]).unwrap();
    assert!(count(&mut s) < 10, "constrained after it");
    assert!(Sampler::chain().grammar_lazy(model, "root ::= (", "root", &[], &trigger).is_err());
    assert!(Sampler::chain().grammar_lazy(model, r#"root ::= "a""#, "root", &[], &[Token(-5)]).is_err());
}

#[test]
fn infill_merges_shared_prefixes() {
    let model = smollm2();
    let v = model.vocab();
    let t = |s: &str| v.tokenize(s, AddSpecial::No).unwrap();
    let (hel, hello, dummy) = (t("hel")[0], t("hello")[0], t(" dummy")[0]);
    let mut c = TokenDataArray::new(vec![
        TokenData { id: hel, logit: 0.5f32.ln(), p: 0.0 },
        TokenData { id: hello, logit: 0.3f32.ln(), p: 0.0 },
        TokenData { id: dummy, logit: 0.2f32.ln(), p: 0.0 },
    ]);
    Sampler::chain().infill(model).apply(&mut c).unwrap();
    assert!(!c.as_slice().iter().any(|x| x.id == hello), "'hello' merged into 'hel': {:?}", c.as_slice());
}

#[derive(Clone)]
struct BanFirst {
    accepted: Vec<Token>,
}

impl CustomSampler for BanFirst {
    fn name(&self) -> &str {
        "ban-first"
    }
    fn apply(&mut self, c: &mut Candidates<'_>) {
        for t in c.as_mut_slice() {
            if t.id == Token(0) {
                t.logit = f32::NEG_INFINITY;
            }
        }
    }
    fn accept(&mut self, t: Token) {
        self.accepted.push(t);
    }
    fn reset(&mut self) {
        self.accepted.clear();
    }
    fn clone_box(&self) -> Option<Box<dyn CustomSampler>> {
        Some(Box::new(self.clone()))
    }
}

struct Panicky;

impl CustomSampler for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    fn apply(&mut self, _: &mut Candidates<'_>) {
        panic!("bug in a user sampler");
    }
}

#[test]
fn rust_samplers_work_inside_chains_and_panics_become_errors() {
    let mut s = Sampler::chain().top_k(3).custom(BanFirst { accepted: vec![] }).greedy_pick();
    assert_eq!(s.names(), ["top-k", "ban-first", "greedy"]);
    let mut c = TokenDataArray::from_logits(&[9.0, 1.0, 2.0, 0.0]);
    s.apply(&mut c).unwrap();
    assert_eq!(c.selected().map(|t| t.id), Some(Token(2)));
    s.accept(Token(2)).unwrap();
    let copy = s.try_clone().unwrap();
    assert_eq!(copy.names(), s.names());

    let mut bad = Sampler::chain().custom(Panicky).greedy_pick();
    let panicked = SampleError::CustomPanicked("bug in a user sampler".into());
    assert_eq!(bad.apply(&mut TokenDataArray::from_logits(&[1.0, 2.0])), Err(panicked.clone()));
    assert_eq!(bad.try_clone().err(), Some(SamplerBuildError::NotClonable));

    // On the real model too.
    let model = smollm2();
    let mut ctx = model.context(small_ctx()).unwrap();
    prefill(&mut ctx, &model.vocab().tokenize("Hello", AddSpecial::Yes).unwrap(), 0);
    assert_eq!(bad.sample(&ctx, Output::Last), Err(panicked));
    assert_ne!(
        Sampler::chain().custom(BanFirst { accepted: vec![] }).greedy_pick().sample(&ctx, Output::Last).unwrap(),
        Token(0)
    );
}

#[test]
fn chains_without_a_selector_are_errors_not_aborts() {
    let model = smollm2();
    let mut ctx = model.context(small_ctx()).unwrap();
    prefill(&mut ctx, &model.vocab().tokenize("Hello there, my friend", AddSpecial::Yes).unwrap(), 0);
    assert_eq!(Sampler::chain().top_k(5).sample(&ctx, Output::Last), Err(SampleError::NoSelection));
    assert_eq!(Sampler::chain().sample(&ctx, Output::Last), Err(SampleError::EmptyChain));
    assert_eq!(Sampler::greedy().sample(&ctx, Output::At(0)), Err(SampleError::NoLogits(Output::At(0))));
}

fn generate(sampler: &mut Sampler, prompt: &str, n: usize) -> Vec<Token> {
    let model = smollm2();
    let mut ctx = model.context(small_ctx()).unwrap();
    let prompt = model.vocab().tokenize(prompt, AddSpecial::Yes).unwrap();
    prefill(&mut ctx, &prompt, 0);
    let mut out = Vec::new();
    let mut batch = llama::Batch::new(1, 1);
    for pos in (prompt.len()..).take(n) {
        let t = sampler.sample(&ctx, Output::Last).unwrap();
        out.push(t);
        batch.clear();
        batch.add(t, pos, &[0], Logits::Want).unwrap();
        ctx.decode(&batch).unwrap();
    }
    out
}

#[test]
fn top_k_1_is_greedy_and_seeds_are_reproducible() {
    let prompt = "Write a short poem about the sea:";
    let greedy = generate(&mut Sampler::greedy(), prompt, 24);
    assert_eq!(generate(&mut Sampler::chain().top_k(1).dist(123), prompt, 24), greedy);
    let seeded = |seed| generate(&mut Sampler::chain().top_k(40).top_p(0.95).temp(1.0).dist(seed), prompt, 24);
    let a = seeded(7);
    assert_eq!(a, seeded(7));
    assert_ne!(a, seeded(8));
    let mut s = Sampler::chain().top_k(40).temp(0.8).dist(1);
    generate(&mut s, prompt, 5);
    assert_eq!(s.perf().n_sample, 5);
}
