//! Decompose → research in parallel → synthesise, over any [`Backend`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backend::{Ask, Backend, Reply};
use crate::progress::Progress;
use crate::structured::{Brief, Questions, Structured};

/// What to research and how hard.
#[derive(Debug, Clone)]
pub struct Settings {
    pub topic: String,
    /// Follow-up rounds after the first.
    pub rounds: usize,
    /// Requests at once.
    pub parallel: usize,
    pub max_questions: usize,
    /// Tokens per research answer.
    pub max_tokens: usize,
    pub temperature: f32,
    pub seed: u32,
}

/// One researched question.
#[derive(Debug, Clone)]
pub struct Finding {
    pub question: String,
    /// 1 for the plan's questions, then one more per follow-up round.
    pub round: usize,
    pub answer: String,
    /// Stopped by the token limit.
    pub cut: bool,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
}

/// Wall time and tokens of one step.
#[derive(Debug, Clone)]
pub struct StepStats {
    pub name: String,
    pub wall: Duration,
    pub tokens: usize,
    /// Requests in flight at once, as the pipeline saw them.
    pub in_flight: usize,
}

/// Why the pipeline ended early.
#[derive(Debug, Clone)]
pub enum Stop {
    Interrupted,
    Failed(String),
}

/// Everything gathered, complete or not.
#[derive(Debug, Clone)]
pub struct Report {
    pub topic: String,
    pub findings: Vec<Finding>,
    pub brief: Option<Brief>,
    pub stop: Option<Stop>,
    pub steps: Vec<StepStats>,
}

/// Research answers each get this share of the synthesis prompt, so the brief's prompt stays
/// bounded however many rounds ran (characters, about four per token).
const NOTES_CHARS: usize = 6000;

/// Each researcher's own system prompt starts from one of these perspectives.
const ANGLES: [&str; 6] = [
    "a market analyst who thinks in market sizes, growth rates and who pays whom",
    "a technologist who knows what the technology can and cannot do today",
    "an economist who follows costs, prices and incentives",
    "a strategist who asks who wins, who loses and how incumbents respond",
    "a sceptical reviewer who looks for weak evidence, risks and counter-arguments",
    "a policy analyst who follows regulation, privacy and energy use",
];

/// A structured step whose answer does not parse is asked again this often.
const TRIES: usize = 2;

/// Runs every step; on Ctrl-C or a failure, returns what it has with the reason in `stop`.
pub fn run(backend: &dyn Backend, settings: &Settings, cancel: &AtomicBool, progress: &Progress) -> Report {
    let report =
        Report { topic: settings.topic.clone(), findings: Vec::new(), brief: None, stop: None, steps: Vec::new() };
    let mut run = Run { backend, s: settings, cancel, progress, report, requests: 0 };
    if let Err(stop) = run.steps() {
        run.report.stop = Some(stop);
    }
    run.report
}

struct Run<'a> {
    backend: &'a dyn Backend,
    s: &'a Settings,
    cancel: &'a AtomicBool,
    progress: &'a Progress,
    report: Report,
    /// Requests made, for distinct seeds.
    requests: u32,
}

impl Run<'_> {
    fn steps(&mut self) -> Result<(), Stop> {
        let s = self.s;
        let plan: Questions = self.structured(
            "plan",
            (crate::structured::MIN_QUESTIONS, s.max_questions),
            format!(
                "You plan research. Split the user's topic into {} to {} distinct, specific research \
                 questions that together cover it: size and trend, drivers, who gains and who loses, \
                 costs, risks, outlook. Each question is a full sentence ending in a question mark. \
                 Example for the topic \"Electric cars in Europe\": {{\"questions\": [\"How fast are \
                 electric car sales growing in Europe?\", \"What does charging infrastructure cost, and \
                 who pays for it?\", \"Which carmakers gain or lose market share?\"]}}",
                crate::structured::MIN_QUESTIONS,
                s.max_questions
            ),
            format!("Topic: {}", s.topic),
            64 + 64 * s.max_questions,
        )?;
        self.progress.log(&format!("plan: {} sub-questions", plan.questions.len()));
        for (i, q) in plan.questions.iter().enumerate() {
            self.progress.log(&format!("  {}. {q}", i + 1));
        }
        let mut pending = plan.questions;
        for round in 1..=s.rounds + 1 {
            self.research(round, &pending)?;
            if round > s.rounds {
                break;
            }
            pending = self.follow_ups(round)?;
            if pending.is_empty() {
                self.progress.log(&format!("follow-ups {round}: nothing new to research"));
                break;
            }
        }
        let brief: Brief = self.structured(
            "brief",
            (),
            "You write research briefs for busy readers from the research notes you are given. \
             title: a headline. summary: three sentences. key_findings: the main conclusions, one \
             sentence each. statistics: figures from the notes or widely cited estimates, each a \
             label, a value (a number with its unit) and its context. chart_suggestions: a chart \
             that would make a finding clear and the data it needs. faq: questions a reader would \
             ask, briefly answered. Do not repeat yourself. Reply in JSON."
                .to_string(),
            format!("Topic: {}\n\nResearch notes:\n\n{}", s.topic, self.notes(NOTES_CHARS)),
            1536,
        )?;
        self.progress.log(&format!(
            "brief: {} findings, {} statistics, {} charts, {} FAQ entries",
            brief.key_findings.len(),
            brief.statistics.len(),
            brief.chart_suggestions.len(),
            brief.faq.len()
        ));
        self.report.brief = Some(brief);
        Ok(())
    }

    fn seed(&mut self) -> u32 {
        self.requests += 1;
        self.s.seed.wrapping_add(self.requests)
    }

    fn check_cancel(&self) -> Result<(), Stop> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(Stop::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Asks for JSON under `T`'s schema; parses and checks it, asking again if it is unusable.
    fn structured<T: Structured>(
        &mut self,
        step: &str,
        limits: T::Limits,
        system: String,
        user: String,
        max_tokens: usize,
    ) -> Result<T, Stop> {
        let mut why = String::new();
        for attempt in 1..=TRIES {
            self.check_cancel()?;
            // A greedy retry would repeat itself.
            let temperature = if attempt == 1 { self.s.temperature } else { self.s.temperature.max(0.5) };
            let ask = Ask {
                system: system.clone(),
                user: user.clone(),
                schema: Some(T::schema(limits)),
                max_tokens,
                temperature,
                seed: self.seed(),
            };
            let started = Instant::now();
            let task = self.progress.task(step, max_tokens);
            let reply = self.backend.ask(&ask, self.cancel, &mut |_| task.token());
            let tokens = reply.as_ref().map_or(0, |r| r.tokens);
            let secs = started.elapsed().as_secs_f64();
            task.finish(self.progress, &format!("  [{step}] {tokens} tokens in {secs:.1} s"));
            self.record(step, started.elapsed(), tokens, 1);
            self.check_cancel()?;
            let reply = reply.map_err(|e| Stop::Failed(format!("{step}: {e}")))?;
            let parsed = serde_json::from_str::<T>(&reply.text).map_err(|e| format!("not the JSON asked for: {e}"));
            match parsed.and_then(|mut v| v.check(limits).map(|()| v)) {
                Ok(v) => return Ok(v),
                Err(_) if reply.cut => why = format!("the answer was cut at {max_tokens} tokens"),
                Err(e) => why = e,
            }
            self.progress.log(&format!("{step}: unusable answer ({why}), try {attempt} of {TRIES}"));
        }
        Err(Stop::Failed(format!("{step}: no usable answer in {TRIES} tries: {why}")))
    }

    /// Researches `questions` at once, `parallel` at a time, each with its own system prompt.
    fn research(&mut self, round: usize, questions: &[String]) -> Result<(), Stop> {
        self.check_cancel()?;
        let n = questions.len();
        let workers = self.s.parallel.clamp(1, n.max(1));
        let first = self.report.findings.len();
        self.progress.log(&format!("research round {round}: {n} questions, {workers} at a time"));
        let asks: Vec<Ask> = (0..n).map(|i| self.research_ask(first + i, &questions[i])).collect();
        let (backend, cancel, progress, max_tokens) = (self.backend, self.cancel, self.progress, self.s.max_tokens);
        let next = AtomicUsize::new(0);
        let (in_flight, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let replies: Mutex<Vec<Option<Result<Reply, String>>>> = Mutex::new(vec![None; n]);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    let label = format!("{round}.{}", i + 1);
                    let task = progress.task(&label, max_tokens);
                    task.message(&questions[i]);
                    peak.fetch_max(in_flight.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    let t0 = Instant::now();
                    let reply = backend.ask(&asks[i], cancel, &mut |_| task.token());
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let secs = t0.elapsed().as_secs_f64();
                    let line = match &reply {
                        Ok(r) => {
                            let cut = if r.cut { " (cut at the limit)" } else { "" };
                            format!("  [{label}] {} tokens{cut} in {secs:.1} s: {}", r.tokens, questions[i])
                        }
                        Err(e) => format!("  [{label}] failed after {secs:.1} s: {e}"),
                    };
                    task.finish(progress, &line);
                    replies.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(reply.map_err(|e| e.to_string()));
                });
            }
        });
        let wall = started.elapsed();
        let interrupted = cancel.load(Ordering::Relaxed);
        let mut tokens = 0;
        let mut failure = None;
        let replies = replies.into_inner().unwrap_or_else(|e| e.into_inner());
        for (question, reply) in questions.iter().zip(replies) {
            match reply {
                Some(Ok(r)) => {
                    tokens += r.tokens;
                    self.report.findings.push(Finding {
                        question: question.clone(),
                        round,
                        answer: r.text.trim().to_string(),
                        cut: r.cut,
                        interrupted,
                    });
                }
                Some(Err(e)) => failure = failure.or(Some(e)),
                None => {}
            }
        }
        let peak = peak.load(Ordering::SeqCst);
        self.record(&format!("research {round}"), wall, tokens, peak);
        let engine = match backend.peak_step_sequences() {
            Some(n) => format!("; the engine decoded up to {n} sequences in one step"),
            None => String::new(),
        };
        self.progress.log(&format!(
            "research round {round}: {tokens} tokens in {:.1} s = {:.1} t/s aggregate, up to {peak} requests in flight{engine}",
            wall.as_secs_f64(),
            tokens as f64 / wall.as_secs_f64().max(1e-9)
        ));
        self.check_cancel()?;
        match failure {
            Some(e) => Err(Stop::Failed(format!("research: {e}"))),
            None => Ok(()),
        }
    }

    fn research_ask(&mut self, index: usize, question: &str) -> Ask {
        let angle = ANGLES[index % ANGLES.len()];
        let words = self.s.max_tokens * 2 / 3;
        Ask {
            system: format!(
                "You are {angle}, one of a team researching \"{}\"; colleagues take the other \
                 questions. Answer the question you are given in at most {words} words: concrete \
                 facts, mechanisms and figures you are confident of, and say plainly what is \
                 uncertain. No preamble.",
                self.s.topic
            ),
            user: question.to_string(),
            schema: None,
            max_tokens: self.s.max_tokens,
            temperature: self.s.temperature,
            seed: self.seed(),
        }
    }

    /// The model names what the findings leave open; returns the questions not yet asked.
    fn follow_ups(&mut self, round: usize) -> Result<Vec<String>, Stop> {
        let most = self.s.max_questions.div_ceil(2);
        let asked: Vec<String> = self.report.findings.iter().map(|f| format!("- {}", f.question)).collect();
        let gaps: Questions = self.structured(
            &format!("follow-ups {round}"),
            (1, most),
            format!(
                "You review research notes and find the gaps. Name up to {most} new questions that the \
                 notes leave open, disagree on, or answer without evidence. Never repeat a question \
                 that was already asked. Reply in JSON."
            ),
            format!(
                "Topic: {}\n\nAlready asked:\n{}\n\nNotes:\n\n{}",
                self.s.topic,
                asked.join("\n"),
                self.notes(NOTES_CHARS / 2)
            ),
            64 + 64 * most,
        )?;
        let known: Vec<String> = self.report.findings.iter().map(|f| f.question.to_lowercase()).collect();
        let new: Vec<String> = gaps.questions.into_iter().filter(|q| !known.contains(&q.to_lowercase())).collect();
        self.progress.log(&format!("follow-ups {round}: {} new questions", new.len()));
        Ok(new)
    }

    /// The findings as prompt text, each answer cut to its share of `budget` characters.
    fn notes(&self, budget: usize) -> String {
        let share = (budget / self.report.findings.len().max(1)).max(300);
        let mut out = String::new();
        for f in &self.report.findings {
            let answer = match f.answer.char_indices().nth(share) {
                Some((end, _)) => format!("{}…", &f.answer[..end]),
                None => f.answer.clone(),
            };
            out.push_str(&format!("Q: {}\nA: {answer}\n\n", f.question));
        }
        out
    }

    fn record(&mut self, name: &str, wall: Duration, tokens: usize, in_flight: usize) {
        self.report.steps.push(StepStats { name: name.to_string(), wall, tokens, in_flight });
    }
}
