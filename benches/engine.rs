//! The serving engine under load, in one run (machine speed drifts: only same-run ratios mean
//! anything):
//! 1. Aggregate generated tokens/s with 1, 2, 4 and 8 concurrent streams (128 tokens each,
//!    distinct prompts) ÷ one stream, alternated over rounds, next to the batch-cost bound
//!    N ÷ (cost of an N-sequence decode ÷ cost of a 1-token decode) measured alongside, and one
//!    stream against `Context::generate` (three adjacent pairs a round, alternating which goes
//!    first).
//! 2. Fairness: 3 streams generating, then a 1,500-token prompt arrives; the streams'
//!    inter-token latency p99 while it is read vs their p50 at the same positions in a run
//!    without it (and vs their p50 before it arrived), and its time to first token.
//! 3. Peak RSS of a 4-slot engine vs one single-sequence context of the same total `n_ctx`
//!    (each in its own process).
//! 4. What idle cells cost a decode in a unified pool: one sequence's 1-token decode beside
//!    0 to 4,096 cells of another sequence (what one stream pays for other conversations'
//!    cached prefixes).
//! 5. What a prompt chunk costs beside 3 generating sequences: a step with their 3 tokens and
//!    0 to 500 tokens of a prompt 750 tokens in, ÷ the step without (what the pacer trades).
//!
//! ```text
//! cargo bench --bench engine -- [--model-name smollm2 | --model PATH] [--requantize q4_0]
//!     [--threads 2] [--rounds 3] [--tokens 128] [--prefill-budget 256] [--slowdown 3]
//!     [--only scaling|fairness|rss|idle|chunks]
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use llama::engine::{Engine, EngineParams, Event, Request};
use llama::{AddSpecial, Batch, ContextParams, GenerateParams, Logits, Model, Output, Sampler, Token};
use llama_examples::cli::{at_least, BenchFlag, ModelArgs};

const PROMPTS: [&str; 8] = [
    "Write a story about a robot who learns to paint.",
    "Explain how volcanoes form, step by step.",
    "Describe a busy market in a coastal town.",
    "List the reasons people enjoy gardening, with examples.",
    "Tell the history of the printing press.",
    "Write a letter from a sailor to his family.",
    "Describe the life cycle of a star.",
    "Explain how a computer compiles a program.",
];

/// The serving engine under load: scaling with streams, fairness under a long prompt, peak RSS.
#[derive(Debug, Parser)]
// A repeated flag takes its last value, as the hand-written parser did.
#[command(args_override_self = true)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Run the model re-quantized to this type (q4_0, q8_0 or f16), cached next to it.
    #[arg(long, value_name = "TYPE")]
    requantize: Option<String>,
    /// CPU threads.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least(1))]
    threads: usize,
    /// Rounds of the scaling measurement (fairness runs at most 2).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = at_least(1))]
    rounds: usize,
    /// Tokens per stream in the scaling measurement.
    #[arg(long, value_name = "N", default_value_t = 128)]
    tokens: usize,
    /// The engine's prefill budget in the fairness measurement.
    #[arg(long = "prefill-budget", value_name = "N", default_value_t = 256)]
    budget: usize,
    /// The engine's prefill slowdown in the fairness measurement.
    #[arg(long, value_name = "FACTOR", default_value_t = 3.0)]
    slowdown: f64,
    /// Run one measurement only.
    #[arg(long, value_name = "WHICH", value_parser = ["scaling", "fairness", "rss", "idle", "chunks"])]
    only: Option<String>,
    /// Internal: the RSS measurement's child, `engine` or `context`.
    #[arg(long, value_name = "WHICH", hide = true)]
    rss_child: Option<String>,
    #[command(flatten)]
    bench: BenchFlag,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let mut path = a.model.path()?;
    if let Some(kind) = &a.requantize {
        path = llama_examples::derived::requantized(&path, kind)?;
    }
    if let Some(which) = &a.rss_child {
        return rss_child(&path, which, a.threads);
    }
    let model = Model::load(&path)?;
    println!("model: {}", path.display());
    let run = |name: &str| a.only.as_deref().is_none_or(|o| o == name);
    if run("scaling") {
        scaling(&model, &a)?;
    }
    if run("fairness") {
        fairness(&model, &a)?;
    }
    if run("rss") {
        rss(&path, &a)?;
    }
    if run("idle") {
        idle_cells(&model, &a)?;
    }
    if run("chunks") {
        chunk_costs(&model, &a)?;
    }
    Ok(())
}

/// A greedy sampler that never ends early: every end-of-generation token is banned, so each
/// stream produces exactly its token budget.
fn no_eog(model: &Model) -> Result<Sampler, Box<dyn std::error::Error>> {
    let vocab = model.vocab();
    let eog: Vec<(Token, f32)> = vocab.tokens().filter(|&t| vocab.is_eog(t)).map(|t| (t, f32::NEG_INFINITY)).collect();
    Ok(Sampler::chain().logit_bias(model, &eog)?.greedy_pick())
}

/// Indices `0..n`, forwards in even rounds and backwards in odd ones, so drift over a round does
/// not favour one size.
fn alternating(round: usize, n: usize) -> Vec<usize> {
    if round.is_multiple_of(2) {
        (0..n).collect()
    } else {
        (0..n).rev().collect()
    }
}

/// Seconds `batch` takes to decode, its logits read (reading them waits for the computation).
fn timed_decode(ctx: &mut llama::Context, batch: &Batch) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    ctx.decode(batch)?;
    let _ = ctx.logits(Output::Last);
    Ok(started.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Generated tokens per second of `n` concurrent streams, read as a server would: one async task
/// per stream on a single runtime thread. The time is the engine's own (submission to the last
/// completion's end).
fn streams(engine: &Engine, model: &Model, n: usize, tokens: usize) -> Result<f64, Box<dyn std::error::Error>> {
    use futures::StreamExt;
    let mut completions = Vec::new();
    for p in PROMPTS.iter().take(n) {
        let req = Request::new(*p).sampler(no_eog(model)?).params(GenerateParams::default().max_tokens(tokens));
        completions.push(engine.submit(req)?);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let done: Vec<(usize, f64)> = runtime.block_on(async {
        let tasks: Vec<_> = completions
            .into_iter()
            .map(|mut stream| {
                tokio::spawn(async move {
                    let (mut tokens, mut took) = (0, 0.0);
                    while let Some(e) = stream.next().await {
                        match e {
                            Event::Piece { piece, .. } if piece.token.is_some() => tokens += 1,
                            Event::Done { timings, .. } => took = timings.total.as_secs_f64(),
                            _ => {}
                        }
                    }
                    (tokens, took)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or((0, 0.0)));
        }
        out
    });
    let total: usize = done.iter().map(|d| d.0).sum();
    let secs = done.iter().map(|d| d.1).fold(0.0, f64::max);
    if std::env::var_os("ENGINE_BENCH_VERBOSE").is_some() {
        eprintln!(
            "  {n} streams: {total} tokens in {secs:.2} s, {} decode steps so far",
            engine.metrics().decode_steps
        );
    }
    Ok(total as f64 / secs)
}

/// Decode costs of `sizes` tokens, one per sequence, relative to one token, after each sequence
/// holds `past` tokens (the shape of a step with that many streams generating). Sizes alternate
/// and each is the median of 9 decodes, so drift hits them alike.
fn decode_costs(
    model: &Model,
    sizes: &[usize],
    past: usize,
    threads: usize,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let max = sizes.iter().copied().max().unwrap_or(1);
    let params = ContextParams::default().n_ctx(4096).n_seq_max(max).kv_unified(true).n_batch(512).n_threads(threads);
    let mut ctx = model.context(params)?;
    let prompt = model.vocab().tokenize(&PROMPTS[0].repeat(past / 8 + 1), AddSpecial::Yes)?;
    let prompt = &prompt[..past.min(prompt.len())];
    for seq in 0..max {
        ctx.decode_tokens(prompt, 0, seq)?;
    }
    let mut batch = Batch::new(max, 1);
    let mut times = vec![Vec::new(); sizes.len()];
    for _ in 0..9 {
        for (i, &n) in sizes.iter().enumerate() {
            batch.clear();
            for seq in 0..n {
                batch.add(Token(42), prompt.len(), &[seq], Logits::Want)?;
            }
            times[i].push(timed_decode(&mut ctx, &batch)?);
            for seq in 0..n {
                ctx.kv_seq_rm(seq, prompt.len()..)?;
            }
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    if std::env::var_os("ENGINE_BENCH_VERBOSE").is_some() {
        let ms: Vec<String> = medians.iter().map(|t| format!("{:.2}", t * 1e3)).collect();
        eprintln!("  decode ms for {sizes:?} sequences: {}", ms.join(", "));
    }
    Ok(medians.iter().map(|t| t / medians[0]).collect())
}

/// Tokens/s of one stream through `Context::generate`, timed like an engine request (prompt
/// included): what the engine's one-stream figure should match.
fn solo(model: &Model, a: &Args) -> Result<f64, Box<dyn std::error::Error>> {
    let mut ctx = model.context(ContextParams::default().n_ctx(4096).n_threads(a.threads))?;
    let mut sampler = no_eog(model)?;
    let started = Instant::now();
    let mut tokens = 0;
    for piece in ctx.generate(PROMPTS[0], &mut sampler, &GenerateParams::default().max_tokens(a.tokens))? {
        if piece?.token.is_some() {
            tokens += 1;
        }
    }
    Ok(tokens as f64 / started.elapsed().as_secs_f64())
}

fn scaling(model: &Model, a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::new(model, flash_from_env(EngineParams::default().slots(8).n_ctx(4096).threads(a.threads)))?;
    let sizes = [1usize, 2, 4, 8];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    let mut bounds: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    let (mut one, mut vs_solo) = (Vec::new(), Vec::new());
    for round in 0..a.rounds {
        let order = alternating(round, sizes.len());
        let mut tps = vec![0.0; sizes.len()];
        for &i in &order {
            tps[i] = streams(&engine, model, sizes[i], a.tokens)?;
        }
        // One stream against `Context::generate`: adjacent pairs, alternating which goes first,
        // so drift within the round hits both alike.
        for pair in 0..3 {
            let ratio = if (round + pair) % 2 == 0 {
                let one = streams(&engine, model, 1, a.tokens)?;
                one / solo(model, a)?
            } else {
                let plain = solo(model, a)?;
                streams(&engine, model, 1, a.tokens)? / plain
            };
            vs_solo.push(ratio);
        }
        let costs = decode_costs(model, &sizes, 64, a.threads)?;
        for (i, &n) in sizes.iter().enumerate() {
            ratios[i].push(tps[i] / tps[0]);
            bounds[i].push(n as f64 / costs[i]);
        }
        one.push(tps[0]);
        println!(
            "round {}: {}",
            round + 1,
            sizes.iter().zip(&tps).map(|(n, t)| format!("{n}: {t:.1} t/s")).collect::<Vec<_>>().join(", ")
        );
    }
    println!(
        "\nscaling ({} tokens per stream, {} threads, one stream {:.1} t/s median, {:.3}× Context::generate: median of {} adjacent pairs):",
        a.tokens,
        a.threads,
        median(one),
        median(vs_solo.clone()),
        vs_solo.len()
    );
    println!("{:>8} {:>12} {:>12} {:>14}", "streams", "× one", "bound", "× of bound");
    for (i, &n) in sizes.iter().enumerate() {
        let (r, b) = (median(ratios[i].clone()), median(bounds[i].clone()));
        println!("{n:>8} {r:>12.2} {b:>12.2} {:>14.2}", r / b);
    }
    Ok(())
}

/// `ENGINE_BENCH_FA=on|off` forces flash attention (to compare builds whose defaults differ);
/// unset, the engine's own choice.
fn flash_from_env(params: EngineParams) -> EngineParams {
    let fa = match std::env::var("ENGINE_BENCH_FA").as_deref() {
        Ok("on") => llama::FlashAttention::Enabled,
        Ok("off") => llama::FlashAttention::Disabled,
        _ => return params,
    };
    params.context_params(ContextParams::default().flash_attention(fa))
}

/// Token arrival times of 3 generating streams; with `long`, a 1,500-token prompt arrives after
/// 2.5 s. Returns each stream's token times, the arrival moment and the long prompt's first
/// token (`None` without it).
#[allow(clippy::type_complexity)]
fn fairness_run(
    model: &Model,
    a: &Args,
    long: bool,
) -> Result<(Vec<Vec<Instant>>, Instant, Option<Instant>), Box<dyn std::error::Error>> {
    let params = EngineParams::default()
        .slots(4)
        .n_ctx(8192)
        .threads(a.threads)
        .prefill_budget(a.budget)
        .prefill_slowdown(a.slowdown);
    let params = flash_from_env(params);
    let engine = Engine::new(model, params)?;
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Instant)>();
    let mut readers = Vec::new();
    for (i, p) in PROMPTS.iter().take(3).enumerate() {
        let req = Request::new(*p).sampler(no_eog(model)?).params(GenerateParams::default().max_tokens(500));
        let stream = engine.submit(req)?;
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for e in stream {
                if matches!(e, Event::Piece { .. }) {
                    let _ = tx.send((i, Instant::now()));
                }
            }
        }));
    }
    drop(tx);
    std::thread::sleep(Duration::from_millis(2500));
    let arrived = Instant::now();
    let mut first = None;
    if long {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(200);
        let mut prompt = model.vocab().tokenize(&text, AddSpecial::Yes)?;
        prompt.truncate(1500);
        let mut stream = engine.submit(Request::new(prompt).params(GenerateParams::default().max_tokens(4)))?;
        while let Some(e) = stream.recv() {
            if matches!(e, Event::Piece { .. }) && first.is_none() {
                first = Some(Instant::now());
            }
        }
        if first.is_none() {
            return Err("the long prompt produced no token".into());
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let mut by_stream: Vec<Vec<Instant>> = vec![Vec::new(); 3];
    for (i, t) in rx {
        by_stream[i].push(t);
    }
    Ok((by_stream, arrived, first))
}

/// The streams' inter-token gaps while the long prompt is read, against two baselines: their
/// p50 before it arrived, and their p50 at the same token positions in a run where it never
/// arrives (the streams' own growing caches slow their steps too; that run separates the two).
/// Runs alternate, with and without the prompt.
fn fairness(model: &Model, a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    let gap = |t: &[Instant], k: usize| (t[k] - t[k - 1]).as_secs_f64();
    let rounds = a.rounds.clamp(1, 2);
    for round in 0..rounds {
        let control = fairness_run(model, a, false)?;
        let (streams, arrived, first) = fairness_run(model, a, true)?;
        let first = first.ok_or("no first token")?;
        let (mut before, mut during, mut same_positions) = (Vec::new(), Vec::new(), Vec::new());
        for (i, times) in streams.iter().enumerate() {
            for k in 1..times.len() {
                if times[k] <= arrived {
                    before.push(gap(times, k));
                } else if times[k - 1] >= arrived && times[k] <= first {
                    during.push(gap(times, k));
                    if k < control.0[i].len() {
                        same_positions.push(gap(&control.0[i], k));
                    }
                }
            }
        }
        if before.is_empty() || during.is_empty() || same_positions.is_empty() {
            return Err("too few tokens to measure".into());
        }
        let (p50_before, p50_same) = (pct(&mut before, 0.5), pct(&mut same_positions, 0.5));
        let p99 = pct(&mut during, 0.99);
        println!(
            "\nfairness round {} (prefill budget {}, slowdown {}): inter-token p99 while a 1,500-token prompt is read {:.1} ms ({} gaps)\n  = {:.2}× the p50 at the same positions without that prompt ({:.1} ms)\n  = {:.2}× the p50 before it arrived ({:.1} ms, {} gaps); its first token after {:.2} s",
            round + 1,
            a.budget,
            a.slowdown,
            p99 * 1e3,
            during.len(),
            p99 / p50_same,
            p50_same * 1e3,
            p99 / p50_before,
            p50_before * 1e3,
            before.len(),
            (first - arrived).as_secs_f64()
        );
    }
    Ok(())
}

/// Peak resident memory of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_child(path: &std::path::Path, which: &str, threads: usize) -> Result<(), Box<dyn std::error::Error>> {
    let model = Model::load(path)?;
    let params = GenerateParams::default().max_tokens(16);
    match which {
        "engine" => {
            let engine = Engine::new(&model, EngineParams::default().slots(4).n_ctx(4096).threads(threads))?;
            let streams: Vec<_> =
                PROMPTS.iter().take(4).map(|p| engine.submit(Request::new(*p).params(params.clone()))).collect();
            for s in streams {
                s?.into_iter().count();
            }
        }
        _ => {
            let mut ctx = model.context(ContextParams::default().n_ctx(4096).n_threads(threads))?;
            let mut sampler = Sampler::greedy();
            ctx.generate(PROMPTS[0], &mut sampler, &params)?.collect_text()?;
        }
    }
    println!("{}", peak_rss_kib());
    Ok(())
}

fn rss(path: &std::path::Path, a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let measure = |which: &str| -> Result<u64, Box<dyn std::error::Error>> {
        let out = std::process::Command::new(std::env::current_exe()?)
            .args(["--model", &path.display().to_string(), "--threads", &a.threads.to_string(), "--rss-child", which])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.lines().last().unwrap_or("0").trim().parse()?)
    };
    let (engine, context) = (measure("engine")?, measure("context")?);
    println!(
        "\npeak RSS, n_ctx 4096: 4-slot engine {:.1} MiB, one single-sequence context {:.1} MiB ({:.2}×)",
        engine as f64 / 1024.0,
        context as f64 / 1024.0,
        engine as f64 / context.max(1) as f64
    );
    Ok(())
}

/// A 1-token decode of one sequence (140 tokens in) beside `n` cells another sequence holds in
/// the same unified pool, ÷ the same decode beside none. Sizes alternate over rounds; each
/// figure is the median of 20 decodes, then of the rounds.
fn idle_cells(model: &Model, a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let params = ContextParams::default().n_ctx(8192).n_seq_max(2).kv_unified(true).n_batch(512).n_threads(a.threads);
    let mut ctx = model.context(params)?;
    let text = PROMPTS.join(" ").repeat(60);
    let tokens = model.vocab().tokenize(&text, AddSpecial::Yes)?;
    let (own, sizes) = (140, [0usize, 256, 1024, 4096]);
    if tokens.len() < sizes[sizes.len() - 1] {
        return Err("the idle-cell text is too short".into());
    }
    ctx.decode_tokens(&tokens[..own], 0, 0)?;
    let mut batch = Batch::new(1, 1);
    let mut times = vec![Vec::new(); sizes.len()];
    for round in 0..a.rounds.max(3) {
        let order = alternating(round, sizes.len());
        for &i in &order {
            ctx.kv_seq_rm(1, ..)?;
            if sizes[i] > 0 {
                ctx.decode_tokens(&tokens[..sizes[i]], 0, 1)?;
            }
            let mut t = Vec::new();
            for k in 0..20 {
                batch.clear();
                batch.add(Token(42), own + k, &[0], Logits::Want)?;
                t.push(timed_decode(&mut ctx, &batch)?);
            }
            ctx.kv_seq_rm(0, own..)?;
            times[i].push(median(t));
        }
    }
    let base = median(times[0].clone());
    println!("\nidle cells in the pool ({} threads): a 1-token decode of another sequence", a.threads);
    println!("{:>12} {:>10} {:>10}", "idle cells", "ms", "× none");
    for (i, n) in sizes.iter().enumerate() {
        let m = median(times[i].clone());
        println!("{n:>12} {:>10.2} {:>10.3}", m * 1e3, m / base);
    }
    Ok(())
}

/// A step holding one token of each of 3 sequences (300 tokens in) and `c` tokens of a prompt
/// (750 tokens in), ÷ the step without the prompt, and what each prompt token added. Sizes
/// alternate over rounds; each figure is the median of the rounds.
fn chunk_costs(model: &Model, a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let (past, at, sizes) = (300, 750, [0usize, 4, 8, 16, 32, 64, 128, 256, 500]);
    let params = ContextParams::default().n_ctx(8192).n_seq_max(4).kv_unified(true).n_batch(512).n_threads(a.threads);
    let mut ctx = model.context(params)?;
    let tokens = model.vocab().tokenize(&PROMPTS.join(" ").repeat(30), AddSpecial::Yes)?;
    if tokens.len() < at + sizes[sizes.len() - 1] {
        return Err("the chunk-cost text is too short".into());
    }
    for seq in 0..3 {
        ctx.decode_tokens(&tokens[..past], 0, seq)?;
    }
    ctx.decode_tokens(&tokens[..at], 0, 3)?;
    let mut batch = Batch::new(512, 1);
    let mut times = vec![Vec::new(); sizes.len()];
    for round in 0..a.rounds.max(5) {
        let order = alternating(round, sizes.len());
        for &i in &order {
            batch.clear();
            for seq in 0..3 {
                batch.add(Token(42), past, &[seq], Logits::Want)?;
            }
            if sizes[i] > 0 {
                batch.add_sequence(&tokens[at..at + sizes[i]], at, 3, Logits::Skip)?;
            }
            times[i].push(timed_decode(&mut ctx, &batch)?);
            for seq in 0..3 {
                ctx.kv_seq_rm(seq, past..)?;
            }
            ctx.kv_seq_rm(3, at..)?;
        }
    }
    let m: Vec<f64> = times.into_iter().map(median).collect();
    println!("\nprompt chunks beside 3 generating sequences ({} threads):", a.threads);
    println!("{:>8} {:>10} {:>12} {:>18}", "chunk", "step ms", "× decode", "ms per prompt tok");
    for (i, &c) in sizes.iter().enumerate() {
        let per = if c > 0 { format!("{:.2}", (m[i] - m[0]) / c as f64 * 1e3) } else { "-".into() };
        println!("{c:>8} {:>10.2} {:>12.2} {per:>18}", m[i] * 1e3, m[i] / m[0]);
    }
    Ok(())
}
