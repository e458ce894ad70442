//! `/metrics`: the engines' counters per model plus the server's HTTP counters, in the
//! Prometheus text format (simple enough to write by hand).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::engine::{Histogram, Metrics, LATENCY_BUCKETS};

/// What `/metrics` reports per model: build one per model from its engine's
/// [`metrics`](crate::engine::EngineHandle::metrics) to [`render`] them without the registry.
#[derive(Debug, Clone)]
pub struct ModelStats {
    /// The model's name, the `model` label.
    pub name: String,
    /// Loaded now.
    pub loaded: bool,
    /// Being loaded now.
    pub loading: bool,
    /// Times it was loaded.
    pub loads: u64,
    /// Times it was unloaded.
    pub unloads: u64,
    /// Live engine metrics plus those of unloaded engines.
    pub metrics: Metrics,
}

/// What the HTTP layer counts.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// `(route, status)` → requests.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    in_flight: AtomicU64,
    /// Generations cancelled because their client went away before the end.
    disconnects: AtomicU64,
}

impl HttpMetrics {
    /// A request came in.
    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was answered on `route` with `status`.
    pub fn finished(&self, route: &'static str, status: u16) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()).entry((route, status)).or_default() += 1;
    }

    /// A client went away before its generation ended.
    pub fn disconnected(&self) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Clients gone before the end, so far.
    pub fn disconnects(&self) -> u64 {
        self.disconnects.load(Ordering::Relaxed)
    }
}

/// Adds `m`'s counters and histograms to `total` (gauges are left alone).
pub fn absorb(total: &mut Metrics, m: &Metrics) {
    total.prompt_tokens += m.prompt_tokens;
    total.cached_tokens += m.cached_tokens;
    total.generated_tokens += m.generated_tokens;
    total.decode_steps += m.decode_steps;
    total.requests += m.requests;
    total.rejected_busy += m.rejected_busy;
    total.preemptions += m.preemptions;
    total.resumed += m.resumed;
    total.stalled += m.stalled;
    let (c, d) = (&mut total.prefix_cache, &m.prefix_cache);
    c.saves += d.saves;
    c.hits += d.hits;
    c.misses += d.misses;
    total.max_slots_busy = total.max_slots_busy.max(m.max_slots_busy);
    total.max_step_sequences = total.max_step_sequences.max(m.max_step_sequences);
    let (f, g) = (&mut total.finished, &m.finished);
    f.length += g.length;
    f.stop += g.stop;
    f.eog += g.eog;
    f.cancelled += g.cancelled;
    f.context_full += g.context_full;
    f.deadline += g.deadline;
    f.error += g.error;
    for (a, b) in [
        (&mut total.time_to_first_token, &m.time_to_first_token),
        (&mut total.inter_token_latency, &m.inter_token_latency),
    ] {
        a.sum += b.sum;
        a.cumulative.iter_mut().zip(b.cumulative.iter()).for_each(|(x, y)| *x += y);
    }
}

/// Label values are model names from the command line: escape what the format requires.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, help: &str, models: &[(String, &Histogram)]) {
    header(out, name, "histogram", help);
    for (model, h) in models {
        for (bound, count) in LATENCY_BUCKETS.iter().zip(h.cumulative.iter()) {
            let _ = writeln!(out, "{name}_bucket{{model=\"{model}\",le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{model=\"{model}\",le=\"+Inf\"}} {}", h.count());
        let _ = writeln!(out, "{name}_sum{{model=\"{model}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{model=\"{model}\"}} {}", h.count());
    }
}

/// A per-model series: name, help text, and how to read its value.
type Series = (&'static str, &'static str, fn(&ModelStats) -> u64);

/// Prometheus text (format 0.0.4) for the HTTP counters and each model's engine.
pub fn render(http: &HttpMetrics, models: &[ModelStats]) -> String {
    let mut out = String::new();
    header(&mut out, "llama_http_requests_total", "counter", "HTTP requests answered, by route and status.");
    for ((route, status), n) in http.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(out, "llama_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
    }
    header(&mut out, "llama_http_requests_in_flight", "gauge", "HTTP requests being answered now.");
    let _ = writeln!(out, "llama_http_requests_in_flight {}", http.in_flight.load(Ordering::Relaxed));
    header(
        &mut out,
        "llama_http_client_disconnects_total",
        "counter",
        "Generations cancelled because the client disconnected before the end.",
    );
    let _ = writeln!(out, "llama_http_client_disconnects_total {}", http.disconnects());

    let named: Vec<(String, &ModelStats)> = models.iter().map(|m| (escape(&m.name), m)).collect();
    let gauges: [Series; 11] = [
        ("llama_model_loaded", "1 when the model is loaded.", |m| u64::from(m.loaded)),
        ("llama_model_loading", "1 while the model is being loaded.", |m| u64::from(m.loading)),
        ("llama_slots", "Sequences the model's engine decodes together.", |m| m.metrics.slots as u64),
        ("llama_slots_busy", "Slots serving a request now.", |m| m.metrics.slots_busy as u64),
        ("llama_queue_depth", "Requests waiting for a slot.", |m| m.metrics.queue_depth as u64),
        ("llama_kv_cells", "Cells in the KV cache.", |m| m.metrics.kv_cells as u64),
        ("llama_kv_cells_used", "Cells of the KV cache in use.", |m| m.metrics.kv_cells_used as u64),
        ("llama_slots_busy_max", "Most slots busy at once.", |m| m.metrics.max_slots_busy as u64),
        ("llama_step_sequences_max", "Most sequences decoded together in one step.", |m| {
            m.metrics.max_step_sequences as u64
        }),
        ("llama_prefix_cache_ram_bytes", "Bytes of saved prefixes in the prompt cache's RAM tier.", |m| {
            m.metrics.prefix_cache.bytes as u64
        }),
        ("llama_prefix_cache_ram_entries", "Saved prefixes in the prompt cache's RAM tier.", |m| {
            m.metrics.prefix_cache.entries as u64
        }),
    ];
    for (name, help, get) in gauges {
        header(&mut out, name, "gauge", help);
        for (model, m) in &named {
            let _ = writeln!(out, "{name}{{model=\"{model}\"}} {}", get(m));
        }
    }
    let counters: [Series; 14] = [
        ("llama_model_loads_total", "Times the model was loaded.", |m| m.loads),
        ("llama_model_unloads_total", "Times the model was unloaded.", |m| m.unloads),
        ("llama_requests_total", "Requests that got a slot.", |m| m.metrics.requests),
        ("llama_rejected_busy_total", "Requests refused with 503 because the queue was full.", |m| {
            m.metrics.rejected_busy
        }),
        ("llama_prompt_tokens_total", "Prompt tokens of all requests.", |m| m.metrics.prompt_tokens),
        ("llama_cached_prompt_tokens_total", "Prompt tokens found in the KV cache.", |m| m.metrics.cached_tokens),
        ("llama_generated_tokens_total", "Tokens generated.", |m| m.metrics.generated_tokens),
        ("llama_decode_steps_total", "Engine steps that ran the model.", |m| m.metrics.decode_steps),
        ("llama_preemptions_total", "Requests paused to free KV cells, to resume later.", |m| m.metrics.preemptions),
        ("llama_resumed_total", "Paused requests that resumed.", |m| m.metrics.resumed),
        ("llama_stalled_total", "Requests cancelled because their client stopped reading.", |m| m.metrics.stalled),
        ("llama_prefix_cache_ram_saves_total", "Prefixes saved to the RAM tier.", |m| m.metrics.prefix_cache.saves),
        ("llama_prefix_cache_ram_hits_total", "Requests whose prefix was restored from RAM.", |m| {
            m.metrics.prefix_cache.hits
        }),
        ("llama_prefix_cache_ram_misses_total", "Requests that took nothing from RAM.", |m| {
            m.metrics.prefix_cache.misses
        }),
    ];
    for (name, help, get) in counters {
        header(&mut out, name, "counter", help);
        for (model, m) in &named {
            let _ = writeln!(out, "{name}{{model=\"{model}\"}} {}", get(m));
        }
    }
    header(&mut out, "llama_finished_total", "counter", "Completions finished, by reason.");
    for (model, m) in &named {
        let f = &m.metrics.finished;
        for (reason, n) in [
            ("length", f.length),
            ("stop", f.stop),
            ("eog", f.eog),
            ("cancelled", f.cancelled),
            ("context_full", f.context_full),
            ("deadline", f.deadline),
            ("error", f.error),
        ] {
            let _ = writeln!(out, "llama_finished_total{{model=\"{model}\",reason=\"{reason}\"}} {n}");
        }
    }
    let ttft: Vec<(String, &Histogram)> =
        named.iter().map(|(n, m)| (n.clone(), &m.metrics.time_to_first_token)).collect();
    histogram(&mut out, "llama_time_to_first_token_seconds", "From submission to the first token.", &ttft);
    let itl: Vec<(String, &Histogram)> =
        named.iter().map(|(n, m)| (n.clone(), &m.metrics.inter_token_latency)).collect();
    histogram(&mut out, "llama_inter_token_latency_seconds", "Between consecutive tokens of a completion.", &itl);
    out
}
