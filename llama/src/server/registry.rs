//! The models this server can serve, by name: loaded on first use, kept loaded for the
//! keep-alive after their last request, and evicted least recently used first when a request
//! needs room under `--max-loaded-models`.
//!
//! A request holds a [`Lease`] for as long as it runs (for a stream, until its last chunk):
//! a leased model is never unloaded, and releasing the lease starts its keep-alive clock.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::engine::{Embeddings, Engine, EngineHandle, EngineParams, Metrics};
use crate::{ContextParams, FlashAttention, KvCacheType, Model};
use tokio::sync::{Notify, OnceCell};

use crate::server::error::ApiError;
use crate::server::keep_alive::KeepAlive;
use crate::server::metrics::{absorb, ModelStats};
use crate::server::openai::ModelCard;
use crate::server::ModelSpec;

/// How every model's engine is set up (see [`ServerBuilder`](super::ServerBuilder)).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Slots: requests decoded together.
    pub parallel: usize,
    /// KV cache tokens, shared by the slots.
    pub ctx: usize,
    /// Threads (`None`: the available cores).
    pub threads: Option<usize>,
    /// Requests that may wait for a slot.
    pub max_queue: usize,
    /// Bytes of host RAM for the prefix cache's second tier.
    pub cache_ram: usize,
    /// A stream's consumer that reads nothing this long is cancelled.
    pub stall_timeout: Option<Duration>,
    /// KV cache element types, K and V (`None`: F16).
    pub cache_type: Option<(KvCacheType, KvCacheType)>,
    /// Flash attention (`None`: llama.cpp's choice).
    pub flash_attention: Option<FlashAttention>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            parallel: 4,
            ctx: 4096,
            threads: None,
            max_queue: 64,
            cache_ram: 2 << 30,
            stall_timeout: Some(Duration::from_secs(60)),
            cache_type: None,
            flash_attention: None,
        }
    }
}

/// A loaded model with its engine (and, once asked for, its embedding thread).
#[derive(Debug)]
pub struct Loaded {
    pub name: String,
    pub model: Model,
    engine: Engine,
    embeddings: OnceCell<Embeddings>,
    n_ctx: usize,
}

impl Loaded {
    pub fn engine(&self) -> EngineHandle {
        self.engine.handle()
    }

    /// Tokens one sequence can hold.
    pub fn n_ctx(&self) -> usize {
        self.engine.handle().n_ctx()
    }

    /// The embedding thread, started on the first embedding request: it needs its own
    /// context, which a model used only for chat should not pay for.
    pub async fn embeddings(&self) -> Result<Embeddings, ApiError> {
        let model = self.model.clone();
        let n_ctx = self.n_ctx;
        self.embeddings
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || Embeddings::new(&model, n_ctx))
                    .await
                    .map_err(|e| ApiError::internal(format!("the embedding thread did not start: {e}")))?
                    .map_err(|e| ApiError::internal(format!("this model cannot serve embeddings: {e}")))
            })
            .await
            .cloned()
    }
}

enum State {
    Unloaded,
    Loading,
    Loaded(Arc<Loaded>),
}

struct Entry {
    spec: ModelSpec,
    created: u64,
    state: State,
    /// Leases out.
    in_flight: usize,
    /// Requests waiting for this model to finish loading: it must not expire under them.
    waiters: usize,
    /// Busy, and another model waits for its room: new requests wait until it has unloaded.
    yielding: bool,
    last_used: Instant,
    /// When an idle loaded model is unloaded; `None` = never.
    expires: Option<Instant>,
    /// Load attempts so far, so that waiters of a failed attempt get its error.
    attempt: u64,
    failure: Option<(u64, String)>,
    loads: u64,
    unloads: u64,
    /// Counters of engines already unloaded, so `/metrics` counters never go backwards.
    retired: Metrics,
}

impl Entry {
    fn idle(&self) -> bool {
        self.in_flight == 0 && self.waiters == 0
    }

    fn unload(&mut self) -> Option<Arc<Loaded>> {
        let State::Loaded(loaded) = std::mem::replace(&mut self.state, State::Unloaded) else {
            return None;
        };
        absorb(&mut self.retired, &loaded.engine().metrics());
        self.unloads += 1;
        self.expires = None;
        self.yielding = false;
        eprintln!("unloaded model {}", self.spec.name);
        Some(loaded)
    }
}

/// A served model as a listing shows it.
pub struct Listed {
    pub name: String,
    pub path: std::path::PathBuf,
    /// The file's modification time, Unix seconds.
    pub modified: u64,
    /// What requests may hold: `completion`, and `vision` / `audio` with a projector.
    pub capabilities: Vec<&'static str>,
    pub loaded: Option<Arc<Loaded>>,
    /// Unix time at which it unloads if still idle; `None` when not loaded, busy, or kept
    /// forever.
    pub expires_at: Option<u64>,
}

/// The registry; share it as `Arc<Registry>`.
pub struct Registry {
    entries: Mutex<Vec<Entry>>,
    changed: Notify,
    config: EngineConfig,
    max_loaded: usize,
    keep_alive: KeepAlive,
    /// Longest a request waits for its model to load or for room to load it.
    load_wait: Duration,
}

/// A model in use by one request.
pub struct Lease {
    registry: Arc<Registry>,
    index: usize,
    loaded: Option<Arc<Loaded>>,
    keep_alive: KeepAlive,
}

impl std::ops::Deref for Lease {
    type Target = Loaded;

    fn deref(&self) -> &Loaded {
        // Only `Drop` takes it out.
        self.loaded.as_deref().expect("a lease holds its model until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.loaded = None;
        self.registry.release(self.index, self.keep_alive);
    }
}

/// Counts a request waiting for a load, and uncounts it however the wait ends (a client that
/// disconnects drops the waiting future). Between two looks at the registry the count stays:
/// uncounted for a moment, the model it waits for would look idle and could be evicted by
/// another waiter before it is used.
struct Waiting<'a> {
    registry: &'a Registry,
    index: usize,
    counted: bool,
}

impl<'a> Waiting<'a> {
    fn new(registry: &'a Registry, entries: &mut [Entry], index: usize) -> Waiting<'a> {
        entries[index].waiters += 1;
        Waiting { registry, index, counted: true }
    }

    /// Uncounts it under the caller's lock.
    fn end(mut self, entries: &mut [Entry]) {
        entries[self.index].waiters -= 1;
        self.counted = false;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.registry.lock()[self.index].waiters -= 1;
            self.registry.changed.notify_waiters();
        }
    }
}

impl Registry {
    pub(crate) fn new(
        specs: Vec<ModelSpec>,
        config: EngineConfig,
        max_loaded: usize,
        keep_alive: KeepAlive,
        load_wait: Duration,
    ) -> Arc<Self> {
        let now = Instant::now();
        let entries = specs
            .into_iter()
            .map(|spec| Entry {
                created: std::fs::metadata(&spec.path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs()),
                spec,
                state: State::Unloaded,
                in_flight: 0,
                waiters: 0,
                yielding: false,
                last_used: now,
                expires: None,
                attempt: 0,
                failure: None,
                loads: 0,
                unloads: 0,
                retired: Metrics::default(),
            })
            .collect();
        Arc::new(Registry {
            entries: Mutex::new(entries),
            changed: Notify::new(),
            config,
            max_loaded,
            keep_alive,
            load_wait,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // Nothing panics while holding the lock; if something did, the data is still usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().iter().map(|e| e.spec.name.clone()).collect()
    }

    /// The entry for `name`; no name (or an empty one) means the first model.
    fn index(&self, name: Option<&str>) -> Result<usize, ApiError> {
        let entries = self.lock();
        match name.filter(|n| !n.is_empty()) {
            None => Ok(0),
            Some(n) => entries.iter().position(|e| e.spec.name == n).ok_or_else(|| {
                let known: Vec<String> = entries.iter().map(|e| e.spec.name.clone()).collect();
                ApiError::model_not_found(n, &known)
            }),
        }
    }

    /// The model `name`, loading it (and evicting an idle one) if needed. Waits while it loads,
    /// or while every loaded model is busy and there is no room for another, at most the
    /// configured load wait (then 503).
    pub async fn acquire(
        self: &Arc<Self>,
        name: Option<&str>,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Lease, ApiError> {
        let index = self.index(name)?;
        let keep_alive = keep_alive.unwrap_or(self.keep_alive);
        match tokio::time::timeout(self.load_wait, self.wait_for(index, keep_alive)).await {
            Ok(lease) => lease,
            Err(_) => {
                let name = self.lock()[index].spec.name.clone();
                Err(ApiError::unavailable(format!(
                    "model `{name}` did not become available within {}s (loading, or waiting for another model \
                     to go idle)",
                    self.load_wait.as_secs()
                ))
                .retry_after(5))
            }
        }
    }

    async fn wait_for(self: &Arc<Self>, index: usize, keep_alive: KeepAlive) -> Result<Lease, ApiError> {
        let mut waited_on: Option<u64> = None;
        let mut waiting: Option<Waiting> = None;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut evicted = None;
            waiting = {
                let mut entries = self.lock();
                if let Some(w) = waiting.take() {
                    w.end(&mut entries);
                }
                let max_loaded = self.max_loaded;
                let resident = entries.iter().filter(|e| !matches!(e.state, State::Unloaded)).count();
                // Requests waiting for room for an unloaded model: a busy model gives way to them
                // once its running requests end, or steady traffic on it would starve them.
                let starved = entries.iter().any(|e| matches!(e.state, State::Unloaded) && e.waiters > 0);
                let e = &mut entries[index];
                match &e.state {
                    State::Loaded(_) if e.yielding && starved => None,
                    State::Loaded(loaded) => {
                        let loaded = loaded.clone();
                        e.yielding = false;
                        e.in_flight += 1;
                        e.last_used = Instant::now();
                        e.expires = None;
                        return Ok(Lease { registry: self.clone(), index, loaded: Some(loaded), keep_alive });
                    }
                    State::Loading => {
                        waited_on = Some(e.attempt);
                        Some(Waiting::new(self, &mut entries, index))
                    }
                    State::Unloaded => {
                        if let Some((attempt, message)) = &e.failure {
                            if waited_on == Some(*attempt) {
                                return Err(ApiError::internal(message.clone()));
                            }
                        }
                        let room = resident < max_loaded || {
                            evicted = least_recent(&entries, Entry::idle).and_then(|v| entries[v].unload());
                            evicted.is_some()
                        };
                        if room {
                            let e = &mut entries[index];
                            e.state = State::Loading;
                            e.attempt += 1;
                            waited_on = Some(e.attempt);
                            self.spawn_load(index, e.spec.clone(), e.attempt);
                        } else if let Some(busy) = least_recent(&entries, |e| e.in_flight > 0) {
                            // Only a model with requests running: one that is merely loaded for
                            // its waiters serves them first.
                            entries[busy].yielding = true;
                        }
                        Some(Waiting::new(self, &mut entries, index))
                    }
                }
            };
            drop_off_thread(evicted);
            notified.await;
        }
    }

    fn spawn_load(self: &Arc<Self>, index: usize, spec: ModelSpec, attempt: u64) {
        let registry = self.clone();
        let config = self.config.clone();
        tokio::spawn(async move {
            eprintln!("loading model {} from {}", spec.name, spec.path.display());
            let started = Instant::now();
            let name = spec.name.clone();
            let result = tokio::task::spawn_blocking(move || load(&spec, &config))
                .await
                .unwrap_or_else(|e| Err(format!("the loading thread failed: {e}")));
            let mut entries = registry.lock();
            let e = &mut entries[index];
            match result {
                Ok(loaded) => {
                    eprintln!("loaded model {name} in {:.2}s", started.elapsed().as_secs_f64());
                    e.state = State::Loaded(Arc::new(loaded));
                    e.loads += 1;
                    e.last_used = Instant::now();
                    e.expires = expiry(registry.keep_alive);
                }
                Err(message) => {
                    eprintln!("error: model {name}: {message}");
                    e.state = State::Unloaded;
                    // The reason (paths, file details) goes to the log, not to clients.
                    e.failure = Some((attempt, format!("model `{name}` could not be loaded (see the server log)")));
                }
            }
            drop(entries);
            registry.changed.notify_waiters();
        });
    }

    /// Ends a lease: starts the keep-alive clock, and unloads right away for a zero keep-alive.
    fn release(&self, index: usize, keep_alive: KeepAlive) {
        let unloaded = {
            let mut entries = self.lock();
            let e = &mut entries[index];
            e.in_flight -= 1;
            e.last_used = Instant::now();
            e.expires = expiry(keep_alive);
            if e.idle() && e.expires.is_some_and(|t| t <= Instant::now()) {
                e.unload()
            } else {
                None
            }
        };
        drop_off_thread(unloaded);
        self.changed.notify_waiters();
    }

    /// Starts loading the default model in the background (the server answers meanwhile,
    /// `/health` with 503).
    pub fn preload(self: &Arc<Self>) {
        let registry = self.clone();
        tokio::spawn(async move {
            let _ = registry.acquire(None, None).await;
        });
    }

    /// Unloads idle models whose keep-alive ran out, until the registry is dropped.
    pub async fn run_expiry(self: Arc<Self>) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let mut next = now + Duration::from_secs(60);
            let mut unloaded = Vec::new();
            for e in self.lock().iter_mut() {
                if !matches!(e.state, State::Loaded(_)) || !e.idle() {
                    continue;
                }
                match e.expires {
                    Some(t) if t <= now => unloaded.push(e.unload()),
                    Some(t) => next = next.min(t),
                    None => {}
                }
            }
            let any = !unloaded.is_empty();
            unloaded.into_iter().for_each(drop_off_thread);
            if any {
                self.changed.notify_waiters();
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep_until(next.into()) => {}
                () = notified => {}
            }
        }
    }

    /// `true` while a model is being loaded.
    pub fn loading(&self) -> Vec<String> {
        self.lock().iter().filter(|e| matches!(e.state, State::Loading)).map(|e| e.spec.name.clone()).collect()
    }

    /// Every model, as `/v1/models` lists them.
    /// Every served model, loaded or not.
    pub fn listing(&self) -> Vec<Listed> {
        let (now, now_unix) = (Instant::now(), SystemTime::now());
        self.lock()
            .iter()
            .map(|e| {
                let loaded = match &e.state {
                    State::Loaded(l) => Some(l.clone()),
                    _ => None,
                };
                let expires_at = e
                    .expires
                    .filter(|_| loaded.is_some() && e.idle())
                    .and_then(|t| now_unix.checked_add(t.saturating_duration_since(now)))
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs());
                Listed {
                    name: e.spec.name.clone(),
                    path: e.spec.path.clone(),
                    modified: e.created,
                    capabilities: capabilities(&e.spec),
                    loaded,
                    expires_at,
                }
            })
            .collect()
    }

    pub fn cards(&self) -> Vec<ModelCard> {
        self.listing()
            .into_iter()
            .map(|l| ModelCard {
                id: l.name,
                object: "model",
                created: l.modified,
                owned_by: "llama-rs",
                capabilities: l.capabilities,
                loaded: l.loaded.is_some(),
                expires_at: l.expires_at,
            })
            .collect()
    }

    pub fn stats(&self) -> Vec<ModelStats> {
        self.lock()
            .iter()
            .map(|e| {
                let mut metrics = e.retired.clone();
                if let State::Loaded(l) = &e.state {
                    let live = l.engine().metrics();
                    absorb(&mut metrics, &live);
                    metrics.slots = live.slots;
                    metrics.slots_busy = live.slots_busy;
                    metrics.queue_depth = live.queue_depth;
                    metrics.kv_cells = live.kv_cells;
                    metrics.kv_cells_used = live.kv_cells_used;
                    metrics.prefix_cache.entries = live.prefix_cache.entries;
                    metrics.prefix_cache.bytes = live.prefix_cache.bytes;
                }
                ModelStats {
                    name: e.spec.name.clone(),
                    loaded: matches!(e.state, State::Loaded(_)),
                    loading: matches!(e.state, State::Loading),
                    loads: e.loads,
                    unloads: e.unloads,
                    metrics,
                }
            })
            .collect()
    }

    /// Takes every loaded model out (at shutdown, to drop their engines off the async threads).
    pub fn unload_all(&self) -> Vec<Arc<Loaded>> {
        self.lock().iter_mut().filter_map(Entry::unload).collect()
    }
}

/// The loaded model used longest ago among those `pick` accepts.
fn least_recent(entries: &[Entry], pick: impl Fn(&Entry) -> bool) -> Option<usize> {
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.state, State::Loaded(_)) && pick(e))
        .min_by_key(|(_, e)| e.last_used)
        .map(|(i, _)| i)
}

fn expiry(keep_alive: KeepAlive) -> Option<Instant> {
    match keep_alive {
        KeepAlive::Forever => None,
        KeepAlive::For(d) => Instant::now().checked_add(d),
    }
}

fn load(spec: &ModelSpec, config: &EngineConfig) -> Result<Loaded, String> {
    let model = Model::load(&spec.path).map_err(|e| e.to_string())?;
    let train = model.n_ctx_train();
    let n_ctx = if train > 0 { config.ctx.min(train) } else { config.ctx };
    let mut params = EngineParams::default()
        .slots(config.parallel)
        .n_ctx(n_ctx)
        .max_queue(config.max_queue)
        .cache_ram(config.cache_ram);
    if let Some(t) = config.threads {
        params = params.threads(t);
    }
    if let Some(t) = config.stall_timeout {
        params = params.stall_timeout(t);
    }
    if config.cache_type.is_some() || config.flash_attention.is_some() {
        let mut context = ContextParams::default();
        if let Some((k, v)) = config.cache_type {
            context = context.kv_cache_type(k, v);
        }
        if let Some(fa) = config.flash_attention {
            context = context.flash_attention(fa);
        }
        params = params.context_params(context);
    }
    if let Some(path) = &spec.projector {
        params = with_projector(params, &model, path, config.threads)?;
    }
    let engine = Engine::new(&model, params).map_err(|e| e.to_string())?;
    Ok(Loaded { name: spec.name.clone(), model, engine, embeddings: OnceCell::new(), n_ctx })
}

/// What a model's requests may hold, as `/v1/models` and Ollama's `/api/show` say it.
fn capabilities(spec: &ModelSpec) -> Vec<&'static str> {
    let (vision, audio) = spec.media;
    let mut caps = vec!["completion"];
    caps.extend(vision.then_some("vision"));
    caps.extend(audio.then_some("audio"));
    caps
}

/// The engine settings with the model's projector loaded.
#[cfg(feature = "mtmd")]
fn with_projector(
    params: EngineParams,
    model: &Model,
    path: &std::path::Path,
    threads: Option<usize>,
) -> Result<EngineParams, String> {
    let mut builder = crate::media::Projector::builder(path);
    if let Some(t) = threads {
        builder = builder.n_threads(t);
    }
    Ok(params.projector(builder.load(model).map_err(|e| e.to_string())?))
}

#[cfg(not(feature = "mtmd"))]
fn with_projector(_: EngineParams, _: &Model, _: &std::path::Path, _: Option<usize>) -> Result<EngineParams, String> {
    Err("this server was built without image and audio support (feature `mtmd`)".into())
}

/// Dropping an engine joins its thread: never do that on an async worker.
fn drop_off_thread(loaded: Option<Arc<Loaded>>) {
    if let Some(loaded) = loaded {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || drop(loaded))),
            Err(_) => drop(loaded),
        }
    }
}
