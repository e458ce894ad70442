//! The engine's sequences: what each slot is doing, and which slot a new prompt should take.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::request::Event;
use crate::driver::Driver;
use crate::{Context, Sampler, Token};

/// One completion being served by a slot.
#[derive(Debug)]
pub(super) struct Job {
    /// Admission order: the newest job has the largest.
    pub id: u64,
    /// Which completion of its request.
    pub index: usize,
    pub prompt: Arc<[Token]>,
    /// Tokens of this sequence in the KV cache.
    pub n_past: usize,
    pub sampler: Sampler,
    pub driver: Driver,
    /// Kept for the request's forks.
    pub params: crate::GenerateParams,
    /// Sampled, emitted, and waiting to be decoded.
    pub pending: Option<Token>,
    pub tx: mpsc::Sender<Event>,
    /// Events the consumer has no room for yet: while any wait, the sequence pauses.
    pub backlog: VecDeque<Event>,
    pub cancel: Arc<AtomicBool>,
    pub deadline: Option<Instant>,
    pub submitted: Instant,
    pub admitted: Instant,
    pub first_token: Option<Instant>,
    pub last_token: Option<Instant>,
    pub cached: usize,
    /// KV cells this job may grow to, counted against the pool at admission.
    pub reserve: usize,
    /// Slots held for the request's other completions, started from this one's prompt once it
    /// is decoded: (slot, completion index, sampler).
    pub forks: Vec<(usize, usize, Sampler)>,
}

impl Job {
    pub fn prefilling(&self) -> bool {
        self.n_past < self.prompt.len()
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
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    return;
                }
            }
        }
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
    pub reserved: bool,
    /// Engine step when it last served a request (least recently used goes first).
    pub last_used: u64,
}

impl Slot {
    pub fn idle(&self) -> bool {
        self.job.is_none() && !self.reserved
    }
}

/// Where a new prompt should go: the idle slot whose cache shares the longest prefix with it,
/// else the least recently used idle slot. Returns the slot and a busy slot to copy a longer
/// prefix from (with its length), if one has it. At least the last prompt token is always
/// decoded again: its logits start the generation.
pub(super) fn choose(slots: &[Slot], ctx: &Context, prompt: &[Token]) -> Option<(usize, usize, Option<usize>)> {
    let limit = prompt.len().saturating_sub(1);
    let common = |seq: usize| {
        let cached = ctx.cached_tokens(seq).unwrap_or(&[]);
        cached.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(limit)
    };
    let idle = slots.iter().enumerate().filter(|(_, s)| s.idle());
    let best = idle.clone().map(|(i, s)| (common(s.seq), i)).max_by_key(|&(c, i)| (c, std::cmp::Reverse(i)));
    let (best_common, slot) = match best {
        Some((c, i)) if c > 0 => (c, i),
        Some(_) => (0, idle.min_by_key(|(_, s)| s.last_used).map(|(i, _)| i)?),
        None => return None,
    };
    // A busy slot may hold more of this prompt (e.g. the same system prompt, just started).
    let donor = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.job.is_some())
        .map(|(i, s)| (common(s.seq), i))
        .filter(|&(c, _)| c > best_common)
        .max_by_key(|&(c, _)| c);
    Some(match donor {
        Some((c, i)) => (slot, c, Some(i)),
        None => (slot, best_common, None),
    })
}
