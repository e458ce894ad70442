//! Property tests over the public API's boundaries: whatever the input, each call returns a
//! value or the right `Err`, and never panics or aborts the process.
//!
//! Case counts are kept modest so the file runs in well under a minute in a debug build on two
//! cores; raise them locally with `PROPTEST_CASES=...`. Failures are not persisted to files:
//! a real finding becomes a plain regression test at the end of this file.

mod common;

use std::ops::Bound;

use common::{small_ctx, smollm2};
use llama::Logits;
use llama::Output;
use llama::{
    AdaptiveP, AddSpecial, Batch, BatchError, Context, ControlText, Dry, MemoryError, Mirostat, MirostatV2, Penalties,
    Sampler, SpecialSyntax, TempExt, Token, TokenizeError, Utf8Decoder, Xtc,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// `cases` unless `PROPTEST_CASES` asks for more; no failure files in the source tree.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Integers with the values where off-by-one and overflow bugs live weighted up.
fn edgy_i32() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => -4..80i32,
        1 => select(vec![i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX - 1, i32::MAX]),
        1 => any::<i32>(),
    ]
}

/// Sizes and windows: small ones, the edges of llama.cpp's `i32`, and any.
fn edgy_usize() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0..80usize,
        1 => select(vec![0, 1, i32::MAX as usize, i32::MAX as usize + 1, u32::MAX as usize, usize::MAX]),
        1 => any::<usize>(),
    ]
}

/// Floats including NaN, infinities, negative zero and subnormals.
fn edgy_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => -2.0f32..3.0,
        2 => select(vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1.0,
            f32::MIN_POSITIVE,
            1e-45,
            f32::MAX,
            f32::MIN,
        ]),
        1 => any::<f32>(),
    ]
}

fn bound() -> impl Strategy<Value = Bound<usize>> {
    prop_oneof![edgy_usize().prop_map(Bound::Included), edgy_usize().prop_map(Bound::Excluded), Just(Bound::Unbounded),]
}

// ---------------------------------------------------------------------------------------------
// Utf8Decoder

proptest! {
    #![proptest_config(config(512))]

    /// Any split of any bytes decodes exactly as `from_utf8_lossy` of the whole.
    #[test]
    fn utf8_decoder_matches_lossy_decoding(chunks in vec(vec(any::<u8>(), 0..12), 0..16)) {
        let mut d = Utf8Decoder::default();
        let mut out = String::new();
        for c in &chunks {
            out += &d.push(c);
        }
        out += &d.finish();
        let whole: Vec<u8> = chunks.concat();
        prop_assert_eq!(out, String::from_utf8_lossy(&whole));
    }

    /// Valid text split anywhere (even inside a character) comes back unchanged, and nothing of
    /// an incomplete character is emitted early.
    #[test]
    fn utf8_decoder_round_trips_text(text in "\\PC{0,40}", cuts in vec(any::<prop::sample::Index>(), 0..6)) {
        let bytes = text.as_bytes();
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        let mut d = Utf8Decoder::default();
        let mut out = String::new();
        for w in at.windows(2) {
            out += &d.push(&bytes[w[0]..w[1]]);
            prop_assert!(text.starts_with(&out));
        }
        prop_assert_eq!(d.finish(), "");
        prop_assert_eq!(out, text);
    }
}

// ---------------------------------------------------------------------------------------------
// Batch

/// Capacities that are cheap to allocate, or too large to address: never the ones in between,
/// which would really allocate gigabytes.
fn capacity() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0..64usize,
        1 => select(vec![i32::MAX as usize + 1, u32::MAX as usize, usize::MAX / 2, usize::MAX]),
        1 => (i32::MAX as usize + 1)..=usize::MAX,
    ]
}

#[derive(Debug, Clone)]
enum BatchOp {
    Add { token: i32, pos: usize, seqs: Vec<usize>, logits: Logits },
    AddSequence { tokens: Vec<i32>, start: usize, seq: usize, last: Logits },
    Clear,
}

fn batch_op() -> impl Strategy<Value = BatchOp> {
    prop_oneof![
        4 => (edgy_i32(), edgy_usize(), vec(edgy_usize(), 0..5), logits())
            .prop_map(|(token, pos, seqs, logits)| BatchOp::Add { token, pos, seqs, logits }),
        2 => (vec(edgy_i32(), 0..12), edgy_usize(), edgy_usize(), logits())
            .prop_map(|(tokens, start, seq, last)| BatchOp::AddSequence { tokens, start, seq, last }),
        1 => Just(BatchOp::Clear),
    ]
}

fn logits() -> impl Strategy<Value = Logits> {
    prop_oneof![Just(Logits::Want), Just(Logits::Skip)]
}

/// Beyond llama.cpp's `i32` positions and sequence ids.
fn too_large(n: usize) -> bool {
    i32::try_from(n).is_err()
}

/// The error `Batch::add` must give for one entry, checked in the documented order.
fn expected_add(len: usize, cap: usize, n_seq_max: usize, pos: usize, seqs: &[usize]) -> Option<BatchError> {
    if len >= cap {
        Some(BatchError::Full(cap))
    } else if too_large(pos) {
        Some(BatchError::PositionTooLarge(pos))
    } else if seqs.is_empty() || seqs.len() > n_seq_max {
        Some(BatchError::SeqIdCount { got: seqs.len(), max: n_seq_max })
    } else {
        seqs.iter().find(|&&s| too_large(s)).map(|&s| BatchError::SeqIdTooLarge(s))
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Any capacity is a batch or `TooLarge`; zero is rounded up to one.
    #[test]
    fn batch_capacity_is_a_batch_or_too_large(cap in capacity(), n_seq in 0..1000usize, n_embd in 0..4096usize) {
        match Batch::try_new(cap, n_seq) {
            Ok(b) => {
                prop_assert!(cap <= i32::MAX as usize);
                prop_assert_eq!(b.capacity(), cap.max(1));
                prop_assert!(b.is_empty());
            }
            Err(e) => prop_assert!(matches!(e, BatchError::TooLarge { .. }), "{e}"),
        }
        match Batch::new_embeddings(cap, n_embd, n_seq) {
            Ok(b) => prop_assert!(cap <= i32::MAX as usize && !b.has_tokens()),
            Err(e) => prop_assert!(matches!(e, BatchError::TooLarge { .. }), "{e}"),
        }
    }

    /// A shadow model of the batch predicts every result: contents after success, the exact
    /// error otherwise, and a failed `add_sequence` adds nothing.
    #[test]
    fn batch_operations_follow_the_model(
        cap in 1..24usize,
        n_seq_max in 1..4usize,
        ops in vec(batch_op(), 0..24),
    ) {
        let mut batch = Batch::try_new(cap, n_seq_max).unwrap();
        let mut shadow: Vec<i32> = Vec::new();
        for op in ops {
            match op {
                BatchOp::Add { token, pos, seqs, logits } => {
                    let want = expected_add(shadow.len(), cap, n_seq_max, pos, &seqs);
                    let got = batch.add(Token(token), pos, &seqs, logits).err();
                    prop_assert_eq!(&got, &want);
                    if want.is_none() {
                        shadow.push(token);
                    }
                }
                BatchOp::AddSequence { tokens, start, seq, last } => {
                    let ids: Vec<Token> = tokens.iter().copied().map(Token).collect();
                    let result = batch.add_sequence(&ids, start, seq, last);
                    let last_pos = start.saturating_add(tokens.len().max(1) - 1);
                    if shadow.len() + tokens.len() > cap {
                        prop_assert_eq!(result, Err(BatchError::Full(cap)));
                    } else if tokens.is_empty() {
                        prop_assert_eq!(result, Ok(()));
                    } else if too_large(last_pos) || too_large(seq) {
                        prop_assert!(result.is_err());
                    } else {
                        prop_assert_eq!(result, Ok(()));
                        shadow.extend(&tokens);
                    }
                }
                BatchOp::Clear => {
                    batch.clear();
                    shadow.clear();
                }
            }
            let ids: Vec<i32> = batch.tokens().iter().map(|t| t.0).collect();
            prop_assert_eq!(&ids, &shadow);
            prop_assert_eq!(batch.len(), shadow.len());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding arbitrary batches and KV-cache operations

/// A context with four sequences (separate KV streams) and a short prompt in sequences 0 and 1.
fn kv_context() -> Context {
    let mut ctx = smollm2().context(small_ctx().n_seq_max(4).kv_unified(false)).unwrap();
    refill(&mut ctx);
    ctx
}

fn refill(ctx: &mut Context) {
    ctx.clear_kv();
    let prompt = smollm2().vocab().tokenize("The quick brown fox", AddSpecial::Yes).unwrap();
    for seq in 0..2 {
        let mut batch = Batch::new(prompt.len(), 1);
        batch.add_sequence(&prompt, 0, seq, Logits::Want).unwrap();
        ctx.decode(&batch).unwrap();
    }
}

#[derive(Debug, Clone)]
enum KvOp {
    Rm(usize, (Bound<usize>, Bound<usize>)),
    Cp(usize, usize, (Bound<usize>, Bound<usize>)),
    Keep(usize),
    Add(usize, (Bound<usize>, Bound<usize>), i32),
    Div(usize, (Bound<usize>, Bound<usize>), usize),
}

/// Positions near the start of the cache, sometimes anywhere.
fn position() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 0..40usize, 1 => edgy_usize()]
}

fn seq_id() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0..6usize, 1 => edgy_usize()]
}

fn kv_op() -> impl Strategy<Value = KvOp> {
    let range = || (bound(), bound());
    prop_oneof![
        (seq_id(), range()).prop_map(|(s, r)| KvOp::Rm(s, r)),
        (seq_id(), seq_id(), range()).prop_map(|(a, b, r)| KvOp::Cp(a, b, r)),
        seq_id().prop_map(KvOp::Keep),
        (seq_id(), range(), edgy_i32()).prop_map(|(s, r, d)| KvOp::Add(s, r, d)),
        (seq_id(), range(), edgy_usize()).prop_map(|(s, r, d)| KvOp::Div(s, r, d)),
    ]
}

/// `(start, end)` as half-open `u128`s (no overflow at `usize::MAX`) if the range is valid: it
/// starts within llama.cpp's `i32` positions and is not reversed.
fn valid_range(r: &(Bound<usize>, Bound<usize>)) -> Option<(u128, Option<u128>)> {
    let start = match r.0 {
        Bound::Included(s) => s as u128,
        Bound::Excluded(s) => s as u128 + 1,
        Bound::Unbounded => 0,
    };
    let end = match r.1 {
        Bound::Included(e) => Some(e as u128 + 1),
        Bound::Excluded(e) => Some(e as u128),
        Bound::Unbounded => None,
    };
    let fits = start <= i32::MAX as u128 && end.is_none_or(|e| e >= start);
    fits.then_some((start, end))
}

proptest! {
    #![proptest_config(config(96))]

    /// Arbitrary sequence ids and ranges: invalid ones are exactly the refused ones, nothing
    /// aborts, the cache stays consistent (`pos_min <= pos_max`), and decoding the next token
    /// afterwards is a result, not a crash.
    #[test]
    fn kv_operations_validate_ids_and_ranges(ops in vec(kv_op(), 1..8)) {
        thread_local!(static CTX: std::cell::RefCell<Context> = std::cell::RefCell::new(kv_context()));
        CTX.with_borrow_mut(|ctx| -> Result<(), TestCaseError> {
            refill(ctx);
            let seq_ok = |s: usize| s < 4;
            for op in ops {
                let (result, seqs, range) = match &op {
                    KvOp::Rm(s, r) => (ctx.kv_seq_rm(*s, *r), vec![*s], Some(r)),
                    KvOp::Cp(a, b, r) => (ctx.kv_seq_cp(*a, *b, *r), vec![*a, *b], Some(r)),
                    KvOp::Keep(s) => (ctx.kv_seq_keep(*s), vec![*s], None),
                    KvOp::Add(s, r, d) => (ctx.kv_seq_add(*s, *r, *d), vec![*s], Some(r)),
                    KvOp::Div(s, r, d) => (ctx.kv_seq_div(*s, *r, *d), vec![*s], Some(r)),
                };
                let bad_seq = seqs.iter().any(|&s| !seq_ok(s));
                let bad_range = range.is_some_and(|r| valid_range(r).is_none());
                match result {
                    Err(MemoryError::InvalidSeqId { seq, .. }) => prop_assert!(!seq_ok(seq)),
                    Err(MemoryError::InvalidRange { .. }) => prop_assert!(bad_range && !bad_seq),
                    Err(MemoryError::InvalidDivisor(d)) => prop_assert!(d < 1 || too_large(d)),
                    Err(MemoryError::PartialCopyNeedsUnifiedCache) => {
                        prop_assert!(matches!(op, KvOp::Cp(a, b, _) if a != b))
                    }
                    Err(e) => prop_assert!(false, "unexpected {e} for {op:?}"),
                    Ok(()) => {
                        prop_assert!(!bad_seq && !bad_range, "{op:?} accepted");
                        prop_assert!(!matches!(op, KvOp::Div(_, _, d) if d < 1 || too_large(d)), "{op:?} accepted");
                    }
                }
            }
            for seq in 0..4 {
                let (lo, hi) = (ctx.kv_seq_pos_min(seq).unwrap(), ctx.kv_seq_pos_max(seq).unwrap());
                prop_assert_eq!(lo.is_some(), hi.is_some());
                prop_assert!(lo <= hi, "seq {seq}: {lo:?} > {hi:?}");
            }
            prop_assert!(ctx.kv_seq_pos_min(4).is_err() && ctx.kv_seq_pos_max(usize::MAX).is_err());
            let next = ctx.kv_seq_pos_max(0).unwrap().map_or(Some(0), |p| p.checked_add(1));
            if let Some(pos) = next {
                let mut batch = Batch::new(1, 1);
                // A shift may have left the sequence at the last position `llama_pos` holds.
                match batch.add(Token(1), pos, &[0], Logits::Want) {
                    Ok(()) => drop(ctx.decode(&batch)),
                    Err(BatchError::PositionTooLarge(p)) => prop_assert!(p > i32::MAX as usize),
                    Err(e) => prop_assert!(false, "unexpected {e} for position {pos}"),
                }
            }
            Ok(())
        })?;
    }

    /// Batches with arbitrary positions, sequence ids and token ids: `decode` refuses or runs
    /// them, and after a success every requested row of logits is there.
    #[test]
    fn decode_of_arbitrary_batches_is_a_result(
        entries in vec((edgy_i32(), position(), vec(seq_id(), 1..3), logits()), 1..8),
        keep_prompt in any::<bool>(),
    ) {
        thread_local!(static CTX: std::cell::RefCell<Context> = std::cell::RefCell::new(kv_context()));
        CTX.with_borrow_mut(|ctx| -> Result<(), TestCaseError> {
            if keep_prompt { refill(ctx) } else { ctx.clear_kv() }
            let n_vocab = ctx.n_vocab();
            let mut batch = Batch::new(entries.len(), 4);
            for (token, pos, seqs, logits) in &entries {
                let token = if *token >= 0 && *token < 1000 { *token } else { token.rem_euclid(n_vocab as i32 + 8) };
                let _ = batch.add(Token(token), *pos, seqs, *logits);
            }
            if batch.is_empty() {
                return Ok(());
            }
            if ctx.decode(&batch).is_ok() {
                let wanted = (0..batch.len()).filter(|&i| ctx.logits(Output::At(i)).is_some()).count();
                prop_assert!(wanted <= batch.len());
                if let Some(row) = ctx.logits(Output::Last) {
                    prop_assert_eq!(row.len(), n_vocab);
                }
            }
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

/// Text built from pieces a tokenizer finds hard: special-token syntax, byte-token syntax,
/// NULs, lone combining marks, long runs of one character.
fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "\\PC{0,8}",
        any::<String>(),
        select(vec![
            "<|im_start|>",
            "<|im_end|>",
            "<|endoftext|>",
            "<s>",
            "</s>",
            "<0x0A>",
            "<0xZZ>",
            "<|",
            "|>",
            "\0",
            "\u{301}",
            "\r\n",
            "\u{FEFF}",
            "\u{10FFFF}",
            " ",
            "\t\t",
        ])
        .prop_map(String::from),
        ("\\PC{1,2}", 1..300usize).prop_map(|(s, n)| s.repeat(n)),
    ];
    vec(piece, 0..8).prop_map(|v| v.concat())
}

/// Whether SmolLM2's vocabulary has a token for the lone byte `b` (byte-level BPE falls back on
/// those; a byte without one is dropped).
fn byte_has_token(b: u8) -> bool {
    static TABLE: std::sync::OnceLock<[bool; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let vocab = smollm2().vocab();
        let mut table = [false; 256];
        for token in vocab.tokens() {
            if let Ok([b]) = vocab.token_to_bytes(token, ControlText::Hide).as_deref() {
                table[*b as usize] = true;
            }
        }
        table
    })[b as usize]
}

proptest! {
    #![proptest_config(config(256))]

    /// Any text tokenizes to ids in the vocabulary, and without special parsing it detokenizes
    /// back to itself (byte-level BPE loses nothing).
    #[test]
    fn tokenize_is_in_range_and_round_trips(text in hostile_text(), add_special in prop_oneof![Just(AddSpecial::Yes), Just(AddSpecial::No)]) {
        let vocab = smollm2().vocab();
        let tokens = vocab.tokenize(&text, add_special).unwrap();
        for &t in &tokens {
            prop_assert!(vocab.check(t).is_ok(), "{t} out of range");
        }
        let plain = vocab.tokenize(&text, AddSpecial::No).unwrap();
        // Bytes without a token are dropped (see `bytes_without_a_token_are_dropped`).
        let kept: Vec<u8> = text.bytes().filter(|&b| byte_has_token(b)).collect();
        let kept = String::from_utf8_lossy(&kept).into_owned();
        prop_assert_eq!(vocab.detokenize(&plain).unwrap(), kept.clone());
        let mut d = Utf8Decoder::default();
        let mut pieces = String::new();
        for &t in &plain {
            pieces += &d.push(&vocab.token_to_bytes(t, ControlText::Hide).unwrap());
        }
        pieces += &d.finish();
        prop_assert_eq!(pieces, kept);
        // Special parsing on: still in range, whatever the text claims to be.
        for t in vocab.tokenize_with(&text, add_special, SpecialSyntax::Tokens).unwrap() {
            prop_assert!(vocab.check(t).is_ok());
        }
    }

    /// Any i32 id: in-range ids render, others are `InvalidToken` from every lookup.
    #[test]
    fn arbitrary_token_ids_are_checked(ids in vec(prop_oneof![3 => 0..49_200i32, 1 => edgy_i32()], 0..24)) {
        let vocab = smollm2().vocab();
        let n = vocab.n_tokens() as i32;
        let all_valid = ids.iter().all(|&t| (0..n).contains(&t));
        let tokens: Vec<Token> = ids.iter().copied().map(Token).collect();
        match vocab.detokenize(&tokens) {
            Ok(_) => prop_assert!(all_valid),
            Err(TokenizeError::InvalidToken { token, n_vocab }) => {
                prop_assert!(!all_valid && !(0..n_vocab as i32).contains(&token))
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
        for &t in &tokens {
            let valid = (0..n).contains(&t.0);
            prop_assert_eq!(vocab.token_to_bytes(t, ControlText::Show).is_ok(), valid);
            prop_assert_eq!(vocab.text(t).is_ok(), valid);
            prop_assert_eq!(vocab.score(t).is_ok(), valid);
            prop_assert_eq!(vocab.attrs(t).is_ok(), valid);
            if !valid {
                prop_assert!(!vocab.is_eog(t) && !vocab.is_control(t));
            }
        }
    }
}

#[test]
fn huge_repetitions_tokenize_and_round_trip() {
    let vocab = smollm2().vocab();
    for piece in ["a", " ", "\0", "<|im_end|>", "é", "🦀", "ab "] {
        let text = piece.repeat(200_000 / piece.len());
        let tokens = vocab.tokenize(&text, AddSpecial::Yes).unwrap();
        assert!(!tokens.is_empty());
        let plain = vocab.tokenize(&text, AddSpecial::No).unwrap();
        assert_eq!(vocab.detokenize(&plain).unwrap(), text, "{piece:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Samplers

#[derive(Debug, Clone)]
enum Step {
    TopK(i32),
    TopP(f32),
    MinP(f32),
    Typical(f32),
    Temp(f32),
    TempExt(f32, f32, f32),
    Xtc(f32, f32, u32),
    TopNSigma(f32),
    Penalties(usize, f32, f32, f32),
    Dry(f32, f32, usize, usize, Vec<String>),
    LogitBias(Vec<(i32, f32)>),
    /// Top-k first: infill compares every pair of candidates.
    Infill(i32),
    Greedy,
    Dist(u32),
    Mirostat(u32, f32, f32, usize),
    MirostatV2(u32, f32, f32),
    AdaptiveP(f32, f32, u32),
}

fn step() -> impl Strategy<Value = Step> {
    let f = edgy_f32;
    prop_oneof![
        edgy_i32().prop_map(Step::TopK),
        f().prop_map(Step::TopP),
        f().prop_map(Step::MinP),
        f().prop_map(Step::Typical),
        f().prop_map(Step::Temp),
        (f(), f(), f()).prop_map(|(a, b, c)| Step::TempExt(a, b, c)),
        (f(), f(), any::<u32>()).prop_map(|(a, b, s)| Step::Xtc(a, b, s)),
        f().prop_map(Step::TopNSigma),
        (edgy_usize(), f(), f(), f()).prop_map(|(n, a, b, c)| Step::Penalties(n, a, b, c)),
        (f(), f(), edgy_usize(), edgy_usize(), vec("\\PC{0,6}|\n|:|\"", 0..4))
            .prop_map(|(m, b, a, n, br)| Step::Dry(m, b, a, n, br)),
        vec((prop_oneof![0..49_152i32, edgy_i32()], f()), 0..4).prop_map(Step::LogitBias),
        (1..64i32).prop_map(Step::Infill),
        Just(Step::Greedy),
        any::<u32>().prop_map(Step::Dist),
        (any::<u32>(), f(), f(), edgy_usize()).prop_map(|(s, t, e, m)| Step::Mirostat(s, t, e, m)),
        (any::<u32>(), f(), f()).prop_map(|(s, t, e)| Step::MirostatV2(s, t, e)),
        (f(), f(), any::<u32>()).prop_map(|(t, d, s)| Step::AdaptiveP(t, d, s)),
    ]
}

/// Builds the chain; only `Err`s the API documents are allowed.
fn build(steps: &[Step]) -> Result<Sampler, llama::SamplerBuildError> {
    let model = smollm2();
    let mut s = Sampler::chain();
    for step in steps.iter().cloned() {
        s = match step {
            Step::TopK(k) => s.top_k(k),
            Step::TopP(p) => s.top_p(p),
            Step::MinP(p) => s.min_p(p),
            Step::Typical(p) => s.typical(p),
            Step::Temp(t) => s.temp(t),
            Step::TempExt(t, d, e) => s.temp_ext(TempExt::default().temp(t).delta(d).exponent(e)),
            Step::Xtc(p, t, seed) => s.xtc(Xtc::default().probability(p).threshold(t).seed(seed)),
            Step::TopNSigma(n) => s.top_n_sigma(n),
            Step::Penalties(n, r, f, p) => {
                s.penalties(Penalties::default().last_n(n).repeat(r).frequency(f).presence(p))
            }
            Step::Dry(m, b, a, n, br) => {
                s.dry(model, Dry::default().multiplier(m).base(b).allowed_length(a).last_n(n).breakers(br))?
            }
            Step::LogitBias(b) => {
                let b: Vec<(Token, f32)> = b.into_iter().map(|(t, x)| (Token(t), x)).collect();
                s.logit_bias(model, &b)?
            }
            Step::Infill(k) => s.top_k(k).infill(model),
            Step::Greedy => s.greedy_pick(),
            Step::Dist(seed) => s.dist(seed),
            Step::Mirostat(seed, t, e, m) => s.mirostat(model, Mirostat::default().seed(seed).tau(t).eta(e).m(m)),
            Step::MirostatV2(seed, t, e) => s.mirostat_v2(MirostatV2::default().seed(seed).tau(t).eta(e)),
            Step::AdaptiveP(t, d, seed) => s.adaptive_p(AdaptiveP::default().target(t).decay(d).seed(seed)),
        };
    }
    Ok(s)
}

proptest! {
    #![proptest_config(config(192))]

    /// Any chain of any parameters builds or is refused, and sampling a few tokens from a real
    /// decoded context returns ids in the vocabulary or an error.
    #[test]
    fn sampler_chains_with_arbitrary_parameters(steps in vec(step(), 0..6), n in 1..4usize) {
        thread_local!(static CTX: Context = {
            let mut ctx = smollm2().context(small_ctx()).unwrap();
            common::prefill(&mut ctx, &smollm2().vocab().tokenize("Once upon a time", AddSpecial::Yes).unwrap(), 0);
            ctx
        });
        let Ok(mut sampler) = build(&steps) else { return Ok(()) };
        let _ = sampler.names();
        CTX.with(|ctx| -> Result<(), TestCaseError> {
            for _ in 0..n {
                match sampler.sample(ctx, Output::Last) {
                    Ok(t) => prop_assert!(ctx.vocab().check(t).is_ok(), "{t} from {steps:?}"),
                    Err(_) => break,
                }
            }
            if let Ok(mut copy) = sampler.try_clone() {
                let _ = copy.sample(ctx, Output::Last);
            }
            sampler.reset();
            let _ = sampler.sample(ctx, Output::At(0));
            let _ = sampler.sample(ctx, Output::At(usize::MAX));
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------------
// JSON Schema → GBNF

#[cfg(feature = "json-schema")]
mod schema {
    use super::*;
    use serde_json::{Map, Value};

    const KEYWORDS: &[&str] = &[
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "$defs",
        "definitions",
        "minLength",
        "maxLength",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "pattern",
        "title",
        "description",
        "a",
        "b",
    ];

    const WORDS: &[&str] = &[
        "string",
        "integer",
        "number",
        "boolean",
        "null",
        "object",
        "array",
        "date",
        "time",
        "date-time",
        "uuid",
        "#/$defs/a",
        "#/$defs/b",
        "#/definitions/a",
        "#",
        "#/$defs/",
        "#/properties/a",
        "a",
        "b",
        "",
        "\"",
        "\\",
        "::=",
        "\n",
    ];

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            prop_oneof![-3..20i64, any::<i64>()].prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            select(WORDS).prop_map(Value::from),
            "\\PC{0,6}".prop_map(Value::from),
        ]
    }

    /// Schema-shaped values: objects keyed mostly by keywords, with any kind of value under
    /// them, so both valid and subtly invalid schemas come up.
    pub fn schema_value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(5, 48, 5, |inner| {
            let key = prop_oneof![4 => select(KEYWORDS).prop_map(String::from), 1 => "\\PC{0,4}"];
            prop_oneof![
                1 => vec(inner.clone(), 0..4).prop_map(Value::Array),
                3 => vec((key, inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    proptest! {
        #![proptest_config(config(384))]

        /// Conversion never panics, and every grammar it returns is one llama.cpp accepts.
        #[test]
        fn schema_grammars_parse(schema in schema_value()) {
            if let Ok(gbnf) = llama::json_schema_to_grammar(&schema) {
                prop_assert!(gbnf.starts_with("root ::= "));
                let parsed = Sampler::chain().grammar(smollm2(), &gbnf, "root");
                prop_assert!(parsed.is_ok(), "{schema}\n{gbnf}\n{:?}", parsed.err());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions found by the properties above

/// A DRY window of `i32::MAX` made llama.cpp zero-fill two 8 GiB buffers when the chain was
/// built; the window is now clamped like the penalties window.
#[test]
fn a_huge_dry_window_does_not_allocate_it() {
    let model = smollm2();
    let mut ctx = model.context(small_ctx()).unwrap();
    common::prefill(&mut ctx, &model.vocab().tokenize("Hello", AddSpecial::Yes).unwrap(), 0);
    let dry = Dry::default().multiplier(0.8).last_n(usize::MAX).breakers(vec!["\n".into()]);
    let mut s = Sampler::chain().dry(model, dry).unwrap().greedy_pick();
    for _ in 0..3 {
        s.sample(&ctx, Output::Last).unwrap();
    }
}

/// Schemas the converter accepts but whose grammar llama.cpp refuses (found by
/// `schema_grammars_parse`); each should be a `SchemaError` or a grammar that parses.
#[cfg(feature = "json-schema")]
const SCHEMAS_WITH_UNPARSABLE_GRAMMARS: &[&str] = &[
    // An empty list of alternatives becomes an empty rule.
    r#"{"anyOf": []}"#,
    r#"{"oneOf": []}"#,
    r#"{"type": []}"#,
    // A minimum repetition count beyond llama.cpp's limit of 2000.
    r#"{"type": "array", "minItems": 2500}"#,
    r#"{"type": "string", "minLength": 2500}"#,
    // A definition that is nothing but itself.
    r##"{"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}"##,
];

#[cfg(feature = "json-schema")]
#[test]
fn schema_grammar_regressions() {
    let mut bad = Vec::new();
    for text in SCHEMAS_WITH_UNPARSABLE_GRAMMARS {
        let schema: serde_json::Value = serde_json::from_str(text).unwrap();
        if let Ok(gbnf) = llama::json_schema_to_grammar(&schema) {
            if let Err(e) = Sampler::chain().grammar(smollm2(), &gbnf, "root") {
                bad.push(format!("{text}: {e}"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Found by the tokenize fuzz target: SmolLM2's byte-level vocabulary has no token for some
/// bytes (a few ASCII control characters, some UTF-8 lead bytes), and llama.cpp's BPE tokenizer
/// drops bytes it has no token for, so text holding them does not survive a round trip.
/// Documented on `Vocab::tokenize`; not a crash.
#[test]
fn bytes_without_a_token_are_dropped() {
    let vocab = smollm2().vocab();
    let missing: Vec<u8> = (0..=255).filter(|&b| !byte_has_token(b)).collect();
    println!("bytes without a token: {missing:02x?}");
    assert!(missing.contains(&0x04) && missing.len() < 64, "{missing:02x?}");
    for c in ['\u{4}', '\u{6}', '\u{13}', '\u{14}', '\u{16}', '\u{1d}'] {
        let text = format!("a{c}b");
        let tokens = vocab.tokenize(&text, AddSpecial::No).unwrap();
        assert_eq!(vocab.detokenize(&tokens).unwrap(), "ab", "{c:?}");
    }
    // A character whose lead byte has no token loses it; what is left is not UTF-8.
    let tokens = vocab.tokenize("\u{5f980}", AddSpecial::No).unwrap();
    assert_eq!(vocab.detokenize(&tokens).unwrap(), "\u{FFFD}".repeat(3));
}

/// Found by the state fuzz target: a whole state starts with the architecture name, length
/// first, and llama.cpp allocates and zero-fills that length (up to 4 GiB) before checking it
/// against the data. Four bytes of untrusted input cost 4 GiB of memory (an out-of-memory kill on
/// a smaller machine). Needs the length checked in Rust before `llama_state_set_data`.
#[test]
fn a_state_claiming_a_huge_architecture_name_allocates_nothing() {
    fn peak_rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("VmHWM: 0 kB");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    }
    let mut ctx = smollm2().context(small_ctx()).unwrap();
    let before = peak_rss_kib();
    assert!(ctx.load_state(&u32::MAX.to_le_bytes()).is_err());
    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(grown_mib < 256, "loading 4 bytes of state raised the peak RSS by {grown_mib} MiB");
}

/// Found by probing the chat_template fuzz target with loops: two nested `range(99999)` loops
/// kept a thread busy for hours. Rendering now runs on a fuel budget (stopped in ~0.65 s in a
/// debug build).
#[cfg(feature = "jinja")]
#[test]
fn a_template_that_loops_for_hours_is_stopped() {
    use llama::{ChatMessage, ChatTemplate};
    let spin = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}";
    let start = std::time::Instant::now();
    let err = ChatTemplate::new(spin, "", "").render(&[ChatMessage::user("hi")], true).unwrap_err();
    println!("stopped after {:?}: {err}", start.elapsed());
    assert!(start.elapsed() < std::time::Duration::from_secs(60), "{err}");
    // Found by the chat_template fuzzer: a macro calling itself twice runs 2^n calls of cheap
    // instructions that build long strings; r(20) took ~60 s under the fuzzer's ASan build
    // before the budget was cut to 2 million instructions. Now r(18) already runs out.
    let doubly = "{% macro r(n) %}{% if n > 0 %}{{ r(n - 1) }}{{ n }}{% endif %}x{% if n > 0 %}{{ r(n - 1) }}{% endif %}{% endmacro %}{{ r(18) }}";
    let err = ChatTemplate::new(doubly, "", "").render(&[ChatMessage::user("hi")], true).unwrap_err();
    assert!(err.to_string().contains("fuel"), "{err}");
    // The budget leaves room for long real conversations.
    let long: Vec<ChatMessage> = (0..4000)
        .map(|i| if i % 2 == 0 { ChatMessage::user("question") } else { ChatMessage::assistant("answer") })
        .collect();
    ChatTemplate::from_model(smollm2()).unwrap().render(&long, true).unwrap();
}
