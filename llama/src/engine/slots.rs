//! The engine's sequences: the job each slot serves, and where a new prompt should go.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::kv::{common_prefix, Pool, RAM_MIN_GAIN};
use super::media::PromptMedia;
use super::request::Event;
use crate::driver::Driver;
use crate::{Context, Sampler, Token};

/// One completion, from submission to its last event: queued, running in a slot, or queued
/// again after a preemption.
#[derive(Debug)]
pub(super) struct Job {
    /// Admission order of its request: the newest has the largest (its completions share it).
    pub id: u64,
    /// Which completion of its request.
    pub index: usize,
    /// The request's prompt.
    pub prompt: Arc<[Token]>,
    /// Where the prompt's images and audio stand (their positions hold placeholders).
    pub media: Option<Arc<PromptMedia>>,
    /// What the sequence must hold in the KV cache: the prompt, then each generated token once
    /// decoded. A preempted job reads it all again (or restores it) before it goes on.
    pub input: Vec<Token>,
    /// Tokens of `input` in the KV cache.
    pub n_past: usize,
    pub sampler: Sampler,
    pub driver: Driver,
    /// Kept for the request's other completions.
    pub params: crate::GenerateParams,
    /// Sampled, emitted, and waiting to be decoded.
    pub pending: Option<Token>,
    pub tx: mpsc::Sender<Event>,
    /// Events the consumer has no room for yet: while any wait, the sequence pauses.
    pub backlog: VecDeque<Event>,
    /// Since when the consumer has had no room for the next event.
    pub stalled_since: Option<Instant>,
    /// The consumer had no room for an event since the last token, so the sequence may have
    /// waited for it: the next gap between tokens is not the engine's latency.
    pub paused: bool,
    pub cancel: Arc<AtomicBool>,
    pub deadline: Option<Instant>,
    pub submitted: Instant,
    /// First admitted (`None` while it has never run).
    pub admitted: Option<Instant>,
    pub first_token: Option<Instant>,
    pub last_token: Option<Instant>,
    /// Prompt tokens found in the cache at its first admission.
    pub cached: usize,
    /// The request's other completions, started from this one's prompt once it is decoded:
    /// (completion index, sampler), and the slots held for them while it is read.
    pub forks: Vec<(usize, Sampler)>,
    pub fork_slots: Vec<usize>,
}

/// What a job is made of, whichever completion it is.
pub(super) struct JobSpec {
    pub prompt: Arc<[Token]>,
    pub media: Option<Arc<PromptMedia>>,
    pub params: crate::GenerateParams,
    pub tx: mpsc::Sender<Event>,
    pub cancel: Arc<AtomicBool>,
    pub deadline: Option<Instant>,
    pub submitted: Instant,
}

impl Job {
    pub fn new(spec: JobSpec, id: u64, index: usize, mut sampler: Sampler) -> Job {
        sampler.reset();
        Job {
            id,
            index,
            input: spec.prompt.to_vec(),
            prompt: spec.prompt,
            media: spec.media,
            n_past: 0,
            sampler,
            driver: Driver::new(&spec.params),
            params: spec.params,
            pending: None,
            tx: spec.tx,
            backlog: VecDeque::new(),
            stalled_since: None,
            paused: false,
            cancel: spec.cancel,
            deadline: spec.deadline,
            submitted: spec.submitted,
            admitted: None,
            first_token: None,
            last_token: None,
            cached: 0,
            forks: Vec::new(),
            fork_slots: Vec::new(),
        }
    }

    /// Another completion of the same request, starting where this one's prompt ends.
    pub fn fork(&self, index: usize, sampler: Sampler) -> Job {
        let spec = JobSpec {
            prompt: self.prompt.clone(),
            media: self.media.clone(),
            params: self.params.clone(),
            tx: self.tx.clone(),
            cancel: self.cancel.clone(),
            deadline: self.deadline,
            submitted: self.submitted,
        };
        let mut job = Job::new(spec, self.id, index, sampler);
        job.n_past = job.input.len();
        job.admitted = self.admitted;
        job
    }

    /// The medium the sequence must read next, when it stands right where the sequence is.
    #[cfg(feature = "mtmd")]
    pub fn media_due(&self) -> Option<super::media::Span> {
        self.media.as_ref()?.at(self.n_past)
    }

    /// Prompt tokens that can go into the next batch: up to the next medium.
    pub fn batchable(&self) -> usize {
        let end = self.media.as_ref().and_then(|m| m.next_start(self.n_past)).unwrap_or(self.input.len());
        end.min(self.input.len()).saturating_sub(self.n_past)
    }

    pub fn prefilling(&self) -> bool {
        self.n_past < self.input.len()
    }

    /// Sends an event, or keeps it for later if the consumer is behind: never blocks.
    pub fn send(&mut self, event: Event) {
        self.backlog.push_back(event);
        self.flush();
    }

    /// Moves waiting events into the channel while it has room.
    pub fn flush(&mut self) {
        while let Some(event) = self.backlog.pop_front() {
            match self.tx.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.backlog.push_front(event);
                    self.stalled_since.get_or_insert_with(Instant::now);
                    self.paused = true;
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    break;
                }
            }
        }
        self.stalled_since = None;
    }

    /// The consumer dropped its stream or asked to stop.
    pub fn abandoned(&self) -> bool {
        self.tx.is_closed() || self.cancel.load(Ordering::Relaxed)
    }
}

/// One sequence of the shared context.
#[derive(Debug)]
pub(super) struct Slot {
    pub seq: usize,
    pub job: Option<Job>,
    /// Held for a fork of a request whose prompt is still being read.
    pub held_for_fork: bool,
    /// Engine step when it last served a request (least recently used goes first).
    pub last_used: u64,
}

impl Slot {
    pub fn idle(&self) -> bool {
        self.job.is_none() && !self.held_for_fork
    }
}

/// Where a prompt's cached prefix comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The chosen slot's own cache, up to this many tokens.
    Own(usize),
    /// A busy slot's cache, shared into the chosen one.
    Busy { slot: usize, common: usize },
    /// A prefix saved to RAM (by entry id), restored into the chosen slot.
    Ram { entry: u64, common: usize },
}

/// An idle slot's cache is reused for a prompt only when the prompt shares at least this share
/// of what the slot holds (llama-server's similarity rule, stricter than its 0.1: a chat
/// template's common opening must not make a new conversation take another's slot).
const SIMILARITY: f64 = 0.5;

/// Where a new prompt should go: the idle slot whose cache it mostly shares, else an empty one,
/// else the least recently used. Its prefix then comes from whichever holds the most of it:
/// that slot, a busy one, or the RAM tier. At least the last prompt token is always decoded
/// again: its logits start the generation.
pub(super) fn choose(slots: &[Slot], ctx: &Context, pool: &Pool, prompt: &[Token]) -> Option<(usize, Source)> {
    let limit = prompt.len().saturating_sub(1);
    let cached = |seq: usize| ctx.cached_tokens(seq).unwrap_or(&[]);
    let common = |seq: usize| common_prefix(cached(seq), prompt).min(limit);
    let idle = || slots.iter().enumerate().filter(|(_, s)| s.idle());
    let similar = idle()
        .map(|(i, s)| (common(s.seq), cached(s.seq).len(), i))
        .filter(|&(c, held, _)| c > 0 && c as f64 >= SIMILARITY * held as f64)
        .max_by_key(|&(c, _, i)| (c, std::cmp::Reverse(i)))
        .map(|(_, _, i)| i);
    let empty = || idle().find(|(_, s)| cached(s.seq).is_empty()).map(|(i, _)| i);
    let lru = || idle().min_by_key(|(_, s)| s.last_used).map(|(i, _)| i);
    let slot = similar.or_else(empty).or_else(lru)?;
    let own = common(slots[slot].seq);
    let busy = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.job.is_some())
        .map(|(i, s)| (common(s.seq), i))
        .filter(|&(c, _)| c > own)
        .max_by_key(|&(c, _)| c);
    let ram = pool.lookup(prompt, limit).filter(|&(_, c)| c >= own + RAM_MIN_GAIN);
    let source = match (busy, ram) {
        (Some((b, _)), Some((entry, r))) if r > b => Source::Ram { entry, common: r },
        (Some((common, slot)), _) => Source::Busy { slot, common },
        (None, Some((entry, common))) => Source::Ram { entry, common },
        (None, None) => Source::Own(own),
    };
    Some((slot, source))
}
