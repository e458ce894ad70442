//! The engine's memory on the real default model: conversations kept in cache (in the slots, then
//! in host RAM), KV taken on demand with preemption so replies are never cut, stalled consumers,
//! deadlines while queued, and the accounting of cells, decodes and latencies.

mod common;

use std::time::{Duration, Instant};

use common::engine::{drain, never_ends, same_as_solo, NEAR_TIE_BATCHED};
use common::smollm2;
use llama::engine::{Engine, EngineParams, Event, Request};
use llama::{AddSpecial, ChatMessage, FinishReason, FlashAttention, GenerateParams};

fn engine(params: EngineParams) -> Engine {
    Engine::new(smollm2(), params.threads(1)).unwrap()
}

/// A first message of notes that differs from user to user (~150 tokens).
fn notes(user: usize) -> String {
    let topics = ["gardens", "boats", "trains", "bread", "violins", "glaciers", "owls", "lamps"];
    let topic = topics[user % topics.len()];
    (0..6)
        .map(|i| format!("Note {i} of user {user} about {topic}: the {topic} of week {} were noted carefully. ", i * 7))
        .collect()
}

/// One turn of a chat that re-sends the whole conversation, as chat UIs do; returns (prompt
/// tokens, cached tokens). The reply joins the history.
fn turn(engine: &Engine, history: &mut Vec<ChatMessage>, user_says: String) -> (usize, usize) {
    history.push(ChatMessage::new("user", user_says));
    let req = Request::new(history.clone()).params(GenerateParams::default().max_tokens(12));
    let mut reply = String::new();
    let mut counts = (0, 0);
    for event in engine.submit(req).unwrap() {
        match event {
            Event::Started { prompt_tokens, cached_tokens } => counts = (prompt_tokens, cached_tokens),
            Event::Piece { piece, .. } => reply.push_str(&piece.text),
            Event::Error { message, .. } => panic!("{message}"),
            _ => {}
        }
    }
    history.push(ChatMessage::new("assistant", reply));
    counts
}

/// `users` conversations of two turns each, taking turns; returns, per user, the second turn's
/// cached tokens, the first turn's prompt length and the second turn's reply.
fn two_turns(engine: &Engine, users: usize) -> Vec<(usize, usize, String)> {
    let mut histories = vec![Vec::new(); users];
    let first: Vec<usize> = (0..users).map(|u| turn(engine, &mut histories[u], notes(u)).0).collect();
    (0..users)
        .map(|u| {
            let cached = turn(engine, &mut histories[u], "And what else?".into()).1;
            let reply = histories[u].last().map(|m| m.content.clone()).unwrap_or_default();
            (cached, first[u], reply)
        })
        .collect()
}

#[test]
fn conversations_taking_turns_keep_their_history_in_the_slots() {
    // No RAM tier: the slots alone must keep the three conversations. A new one takes an empty
    // slot rather than the one whose cache shares only the chat template's opening.
    let engine = engine(EngineParams::default().slots(4).n_ctx(4096).cache_ram(0));
    for (u, (cached, first_prompt, _)) in two_turns(&engine, 3).into_iter().enumerate() {
        assert!(
            cached >= first_prompt,
            "user {u}: turn 2 found {cached} tokens cached of a {first_prompt}-token turn 1"
        );
    }
}

#[test]
fn more_conversations_than_slots_come_back_from_ram() {
    let users = 5;
    let with_ram = engine(EngineParams::default().slots(2).n_ctx(2048));
    let restored = two_turns(&with_ram, users);
    for (u, (cached, first_prompt, _)) in restored.iter().enumerate() {
        assert!(
            cached >= first_prompt,
            "user {u}: turn 2 found {cached} tokens cached of a {first_prompt}-token turn 1"
        );
    }
    let tier = with_ram.metrics().prefix_cache;
    assert!(tier.hits >= 3 && tier.saves >= 3 && tier.bytes > 0, "{tier:?}");

    // The same without it: at most the two conversations still in the slots find their history.
    let without = engine(EngineParams::default().slots(2).n_ctx(2048).cache_ram(0));
    let recomputed = two_turns(&without, users);
    let found = recomputed.iter().filter(|&&(cached, first, _)| cached >= first).count();
    assert!(found <= 2, "{found} of {users} without a RAM tier");
    assert_eq!(without.metrics().prefix_cache.hits, 0);
    // A restored conversation is that user's own: greedy replies match the ones computed from
    // scratch (one may part at a near-tie, the KV having been computed in other chunks).
    let same = restored.iter().zip(&recomputed).filter(|(a, b)| a.2 == b.2).count();
    assert!(same + 1 >= users, "{same} of {users} replies equal: {restored:?} vs {recomputed:?}");
}

#[test]
fn an_idle_prefix_gives_way_to_a_running_reply_and_comes_back_from_ram() {
    let engine = engine(EngineParams::default().slots(2).n_ctx(512));
    let long = notes(1).repeat(2);
    let long_tokens = smollm2().vocab().tokenize(&long, AddSpecial::Yes).unwrap().len();
    assert!(long_tokens > 200, "{long_tokens}");
    let once = |max| GenerateParams::default().max_tokens(max);
    drain(engine.submit(Request::new(long.as_str()).params(once(2))).unwrap());
    // Needs ~404 cells while the idle slot holds ~250 of 512: the idle prefix must go, not the reply.
    let reply = drain(engine.submit(Request::new("Count:").sampler(never_ends()).params(once(400))).unwrap());
    assert_eq!((reply[0].finish, reply[0].completion_tokens), (Some(FinishReason::Length), 400));
    let m = engine.metrics();
    assert_eq!(m.preemptions, 0, "nothing running had to give way");
    assert!(m.prefix_cache.saves >= 1, "the evicted prefix was saved: {:?}", m.prefix_cache);
    let again = drain(engine.submit(Request::new(long.as_str()).params(once(2))).unwrap());
    let cached = again[0].cached.unwrap();
    assert!(cached + 1 >= long_tokens, "restored {cached} of {long_tokens}");
    assert!(engine.metrics().prefix_cache.hits >= 1);
}

#[test]
fn an_overcommitted_pool_finishes_every_reply_in_full() {
    // Five completions of ~10 + 150 tokens want ~800 cells of a 512-cell pool. None is cut: the
    // newest are preempted and resume; greedy output equals each request run alone.
    // Buffers that hold a whole reply: the streams are read one after another, and none may
    // pause for its reader (a paused sequence stops growing).
    let engine = engine(EngineParams::default().slots(5).n_ctx(512).stream_buffer(256));
    let max = 150;
    let prompts = ["Describe a forest.", "Describe a city.", "Describe the sea.", "Describe a desert."];
    let params = GenerateParams::default().max_tokens(max);
    let mut streams: Vec<_> = prompts
        .iter()
        .take(3)
        .map(|p| engine.submit(Request::new(*p).sampler(never_ends()).params(params.clone())).unwrap())
        .collect();
    let two = Request::new(prompts[3]).samplers(vec![never_ends(), never_ends()]).params(params.clone());
    streams.push(engine.submit(two).unwrap());
    let outs: Vec<_> = streams.into_iter().map(drain).collect();
    for (prompt, completions) in prompts.iter().zip(&outs) {
        for o in completions {
            assert_eq!((o.finish, o.completion_tokens), (Some(FinishReason::Length), max), "{prompt}");
            same_as_solo(never_ends(), prompt, max, &o.tokens, FlashAttention::Auto, NEAR_TIE_BATCHED).unwrap();
        }
    }
    let m = engine.metrics();
    assert!(m.preemptions >= 1, "the pool was overcommitted: {m:?}");
    assert_eq!(m.resumed, m.preemptions);
    assert!(m.kv_cells_used <= m.kv_cells, "{m:?}");
    assert_eq!(m.finished.context_full, 0);
}

#[test]
fn a_reply_with_no_token_limit_runs_until_the_context_ends() {
    // Two such replies on a 256-cell pool: the newer waits (preempted) while the older fills the
    // context, then gets the whole context too.
    let engine = engine(EngineParams::default().slots(2).n_ctx(256));
    let n_ctx = engine.handle().n_ctx();
    let unlimited = GenerateParams::default().max_tokens(usize::MAX);
    let prompt = "Tell me everything:";
    let n_prompt = smollm2().vocab().tokenize(prompt, AddSpecial::Yes).unwrap().len();
    let a = engine.submit(Request::new(prompt).sampler(never_ends()).params(unlimited.clone())).unwrap();
    let b = engine.submit(Request::new(prompt).sampler(never_ends()).params(unlimited)).unwrap();
    for out in [drain(a), drain(b)] {
        assert_eq!(out[0].finish, Some(FinishReason::ContextFull));
        assert_eq!(out[0].completion_tokens, n_ctx - n_prompt, "the whole context, not a default cap");
    }
}

#[test]
fn a_request_past_its_deadline_in_the_queue_never_starts() {
    let engine = engine(EngineParams::default().slots(1).n_ctx(512));
    let long = Request::new("Count to a thousand:").sampler(never_ends());
    let running = engine.submit(long.params(GenerateParams::default().max_tokens(200))).unwrap();
    let late = engine.submit(Request::new("Hi").timeout(Duration::from_millis(300))).unwrap();
    let asked = Instant::now();
    let events: Vec<Event> = late.into_iter().collect();
    assert!(asked.elapsed() < Duration::from_secs(5), "answered while the slot was still busy");
    assert!(!events.iter().any(|e| matches!(e, Event::Started { .. })), "{events:?}");
    assert!(matches!(events.last(), Some(Event::Done { finish: FinishReason::Deadline, .. })), "{events:?}");
    assert_eq!(drain(running)[0].finish, Some(FinishReason::Length), "the running request is untouched");
    assert_eq!(engine.metrics().finished.deadline, 1);
}

#[test]
fn a_stalled_reader_is_cancelled_and_its_slot_serves_the_next() {
    let params =
        EngineParams::default().slots(1).n_ctx(1024).stream_buffer(2).stall_timeout(Duration::from_millis(300));
    let engine = engine(params);
    let forever = GenerateParams::default().max_tokens(800);
    let stalled = engine.submit(Request::new("Go on:").sampler(never_ends()).params(forever)).unwrap();
    let next = engine.submit(Request::new("Hello").params(GenerateParams::default().max_tokens(4))).unwrap();
    let started = Instant::now();
    let out = drain(next);
    assert!(out[0].finish.is_some());
    assert!(started.elapsed() < Duration::from_secs(10), "served once the stalled one was cancelled");
    assert_eq!(engine.metrics().stalled, 1);
    assert_eq!(drain(stalled)[0].finish, Some(FinishReason::Stalled));
}

#[test]
fn the_last_token_costs_no_decode() {
    let engine = engine(EngineParams::default().slots(1).n_ctx(512));
    let out = drain(
        engine
            .submit(Request::new("Hello").sampler(never_ends()).params(GenerateParams::default().max_tokens(5)))
            .unwrap(),
    );
    assert_eq!(out[0].completion_tokens, 5);
    // One decode reads the prompt, four more the first four tokens; the fifth is never decoded.
    assert_eq!(engine.metrics().decode_steps, 5);
}

#[test]
fn a_prompt_shared_by_completions_takes_its_cells_once() {
    let engine = engine(EngineParams::default().slots(4).n_ctx(1024));
    let prompt = notes(2);
    let n_prompt = smollm2().vocab().tokenize(&prompt, AddSpecial::Yes).unwrap().len();
    let samplers = (0..4).map(|_| never_ends()).collect();
    let req = Request::new(prompt.as_str()).samplers(samplers).params(GenerateParams::default().max_tokens(3));
    assert_eq!(drain(engine.submit(req).unwrap()).len(), 4);
    // Each completion decoded two of its three tokens beside the one shared prompt.
    assert_eq!(engine.metrics().kv_cells_used, n_prompt + 4 * 2);
}

#[test]
fn latency_between_tokens_leaves_out_a_slow_readers_pauses() {
    let engine = engine(EngineParams::default().slots(1).n_ctx(512).stream_buffer(1));
    let req = Request::new("Hello").sampler(never_ends()).params(GenerateParams::default().max_tokens(8));
    for event in engine.submit(req).unwrap() {
        if matches!(event, Event::Piece { .. }) {
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    let itl = engine.metrics().inter_token_latency;
    assert_eq!(itl.quantile(1.0).map(|s| s <= 0.25), Some(true), "{itl:?}");
}
