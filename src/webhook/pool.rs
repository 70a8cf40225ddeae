//! The delivery pool: a tokio runtime of its own (`ringcast-webhook-{i}`), an intake loop, and
//! one task per delivery that attempts, backs off and retries until delivered, permanently
//! refused or past its max age.
//!
//! Bounds and overflow policy:
//! - hand-off queue (memory engine, `webhooks.queue`): the control thread `try_send`s; when it
//!   is full the delivery is counted `dropped` (metric + log), never waited for;
//! - deliveries in progress (`webhooks.max_in_flight`, including those waiting to retry): the
//!   intake stops taking jobs while at the cap (memory: the queue fills; redis: entries wait
//!   in Redis);
//! - requests per endpoint (scheme, host, port: `webhooks.max_per_endpoint`) and, within it,
//!   per URL (half of that, at least one): further attempts wait their turn, first for their
//!   URL, then for the endpoint. So one URL that hangs or times out holds at most half of its
//!   host's requests, and the other URLs of that host keep the rest (a hung URL no longer
//!   delays the others by its timeouts).
//!
//! Shutdown (`WebhookPool::shutdown`): memory engine: queued deliveries and those waiting to
//! retry get one immediate attempt, in-flight ones may finish, until the deadline; what is
//! still undelivered then is lost (logged with its count). Redis engine: in-flight requests
//! may finish until the deadline; everything else stays pending in Redis for the next owner.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{Semaphore, mpsc, watch};

use super::{
    Job, Outcome,
    client::WebhookClient,
    retry::{Verdict, backoff, jitter},
    store::{Backend, Store},
};
use crate::{config::WebhookConfig, metrics::WebhookMetrics, timestamp::Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("webhook runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error(transparent)]
    Client(#[from] super::client::ClientError),
    #[error("webhook store: {0}")]
    Store(String),
}

/// The control thread's end of the hand-off queue (memory engine).
#[derive(Clone)]
pub struct WebhookTx {
    tx: mpsc::Sender<Job>,
    metrics: Arc<WebhookMetrics>,
    drops: Arc<DropLog>,
}

impl WebhookTx {
    /// Hands a delivery over without waiting; a full queue counts it `dropped`.
    pub fn submit(&self, job: Job) {
        WebhookMetrics::inc(&self.metrics.pending);
        if let Err(e) = self.tx.try_send(job) {
            WebhookMetrics::dec(&self.metrics.pending);
            WebhookMetrics::inc(&self.metrics.dropped);
            self.drops.note(&e.into_inner());
        }
    }
}

/// Logs dropped deliveries at most once a second (with how many), not once each: a full
/// queue under load would otherwise flood the log.
#[derive(Default)]
struct DropLog {
    since_last: AtomicUsize,
    last_ms: std::sync::atomic::AtomicI64,
}

impl DropLog {
    fn note(&self, job: &Job) {
        self.since_last.fetch_add(1, Ordering::Relaxed);
        let now = Timestamp::now().millis();
        let last = self.last_ms.load(Ordering::Relaxed);
        if now - last >= 1000
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let n = self.since_last.swap(0, Ordering::Relaxed);
            tracing::warn!(dropped = n, last_url = %job.url, last_channel = %job.channel,
                "webhook queue full (webhooks.queue): deliveries dropped");
        }
    }
}

struct Ctx {
    client: WebhookClient,
    store: Store,
    cfg: WebhookConfig,
    metrics: Arc<WebhookMetrics>,
    endpoints: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Per URL: at most half of its endpoint's requests (`endpoint`).
    urls: Mutex<HashMap<String, Arc<Semaphore>>>,
    in_flight: Arc<Semaphore>,
    /// Delivery tasks alive (shutdown waits for 0).
    tasks: AtomicUsize,
    stop: watch::Receiver<bool>,
}

impl Ctx {
    fn endpoint(&self, url: &str) -> Arc<Semaphore> {
        let key = match url.parse::<http::Uri>() {
            Ok(u) => format!(
                "{}://{}:{}",
                u.scheme_str().unwrap_or("http"),
                u.host().unwrap_or(""),
                u.port_u16().unwrap_or(if u.scheme_str() == Some("https") {
                    443
                } else {
                    80
                })
            ),
            Err(_) => url.to_string(),
        };
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.cfg.max_per_endpoint)))
            .clone()
    }

    /// The URL's own limit: half of its endpoint's, at least one.
    fn url_slots(&self, url: &str) -> Arc<Semaphore> {
        let per_url = (self.cfg.max_per_endpoint / 2).max(1);
        let mut map = self.urls.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(url.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(per_url)))
            .clone()
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

pub struct WebhookPool {
    runtime: Option<tokio::runtime::Runtime>,
    stop: watch::Sender<bool>,
    tx: Option<WebhookTx>,
    ctx: Arc<Ctx>,
    intake: Option<tokio::task::JoinHandle<()>>,
}

impl WebhookPool {
    /// Starts the runtime and, for the redis engine, connects and starts reading the stream.
    pub fn start(
        cfg: &WebhookConfig,
        metrics: Arc<WebhookMetrics>,
        backend: Backend,
    ) -> Result<Self, PoolError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.workers)
            // Only DNS lookups block (getaddrinfo); bound them rather than tokio's 512.
            .max_blocking_threads(4)
            .thread_name_fn(|| {
                static N: AtomicUsize = AtomicUsize::new(0);
                format!("ringcast-webhook-{}", N.fetch_add(1, Ordering::Relaxed))
            })
            .enable_all()
            .build()?;
        let memory = matches!(backend, Backend::Memory { .. });
        let client = {
            let _guard = runtime.enter();
            WebhookClient::new(cfg)?
        };
        let store = runtime
            .block_on(Store::connect(backend))
            .map_err(PoolError::Store)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let ctx = Arc::new(Ctx {
            client,
            store,
            cfg: cfg.clone(),
            metrics: metrics.clone(),
            endpoints: Mutex::new(HashMap::new()),
            urls: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Semaphore::new(cfg.max_in_flight)),
            tasks: AtomicUsize::new(0),
            stop: stop_rx,
        });
        let (tx, intake) = if memory {
            let (tx, rx) = mpsc::channel(cfg.queue);
            let intake = runtime.spawn(memory_intake(ctx.clone(), rx));
            let drops = Arc::new(DropLog::default());
            (Some(WebhookTx { tx, metrics, drops }), intake)
        } else {
            (None, runtime.spawn(redis_intake(ctx.clone())))
        };
        Ok(Self {
            runtime: Some(runtime),
            stop: stop_tx,
            tx,
            ctx,
            intake: Some(intake),
        })
    }

    /// The hand-off queue (memory engine; the redis engine persists deliveries instead).
    pub fn sender(&self) -> Option<WebhookTx> {
        self.tx.clone()
    }

    /// Flushes (see the module header) until `deadline`, then stops the runtime.
    pub fn shutdown(mut self, deadline: Instant) {
        self.tx = None;
        let _ = self.stop.send(true);
        if let (Some(rt), Some(intake)) = (&self.runtime, self.intake.take()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = rt.block_on(async { tokio::time::timeout(left, intake).await });
        }
        while self.ctx.tasks.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.ctx.tasks.load(Ordering::Acquire);
        if left > 0 {
            tracing::warn!(
                deliveries = left,
                "webhook deliveries unfinished at shutdown"
            );
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

impl Drop for WebhookPool {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Memory engine: jobs from the control thread. On stop, drains what is queued (each gets
/// one attempt).
async fn memory_intake(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Job>) {
    let mut stop = ctx.stop.clone();
    loop {
        let permit = tokio::select! {
            p = ctx.in_flight.clone().acquire_owned() => p.ok(),
            _ = stop.changed() => None,
        };
        let job = match permit {
            Some(_) if ctx.stopping() => None,
            Some(p) => tokio::select! {
                j = rx.recv() => j.map(|j| (j, Some(p))),
                _ = stop.changed() => None,
            },
            None => None,
        };
        match job {
            Some((job, permit)) => spawn_delivery(&ctx, job, permit),
            None if ctx.stopping() => break,
            None => return, // the control thread is gone
        }
    }
    // Flush: everything still queued gets its final attempt (no in-flight cap at shutdown).
    rx.close();
    while let Some(job) = rx.recv().await {
        spawn_delivery(&ctx, job, None);
    }
}

/// Redis engine: own pending entries first, then new ones, claiming abandoned ones now and
/// then and keeping held ones fresh.
async fn redis_intake(ctx: Arc<Ctx>) {
    let Store::Redis(store) = &ctx.store else {
        return;
    };
    let claim_every = (ctx.cfg.claim_after / 3).max(Duration::from_millis(100));
    let mut last_claim = Instant::now() - claim_every;
    // This node's own entries from a previous life are read page by page first.
    let mut resume_after: Option<String> = Some("0".into());
    let mut stop = ctx.stop.clone();
    while !ctx.stopping() {
        let free = ctx.in_flight.available_permits();
        if free == 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let count = free.min(256) as u64;
        let read = if let Some(after) = resume_after.take() {
            match store.own_pending(&after, count).await {
                Ok((jobs, bad, last)) => {
                    if !jobs.is_empty() {
                        tracing::info!(
                            count = jobs.len(),
                            "resuming this node's pending webhook deliveries"
                        );
                    }
                    resume_after = last;
                    Ok((jobs, bad))
                }
                Err(e) => {
                    resume_after = Some(after);
                    Err(e)
                }
            }
        } else if last_claim.elapsed() >= claim_every {
            last_claim = Instant::now();
            store.refresh_held().await;
            store
                .claim_idle(ctx.cfg.claim_after, count)
                .await
                .inspect(|(jobs, _)| {
                    if !jobs.is_empty() {
                        tracing::info!(
                            count = jobs.len(),
                            "took over webhook deliveries left by another node"
                        );
                        ctx.metrics
                            .claimed
                            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
                    }
                })
        } else {
            store.read_new(count).await
        };
        match read {
            Ok((jobs, bad)) => {
                ctx.metrics.failed.fetch_add(bad as u64, Ordering::Relaxed);
                for job in jobs {
                    WebhookMetrics::inc(&ctx.metrics.pending);
                    let permit = ctx.in_flight.clone().try_acquire_owned().ok();
                    spawn_delivery(&ctx, job, permit);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading pending webhook deliveries from Redis failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

fn spawn_delivery(ctx: &Arc<Ctx>, job: Job, permit: Option<tokio::sync::OwnedSemaphorePermit>) {
    ctx.tasks.fetch_add(1, Ordering::AcqRel);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        deliver(&ctx, job).await;
        drop(permit);
        WebhookMetrics::dec(&ctx.metrics.pending);
        ctx.tasks.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Attempts until the delivery ends, then records the outcome.
async fn deliver(ctx: &Ctx, job: Job) {
    let memory = matches!(ctx.store, Store::Memory { .. });
    let deadline_ms = job.created_ms + ctx.cfg.max_age.as_millis() as i64;
    let mut stop = ctx.stop.clone();
    let mut failures = 0u32;
    loop {
        let final_attempt = ctx.stopping();
        let attempt = {
            // The URL's turn first, then the endpoint's: waiting for a busy URL holds none of
            // its host's requests.
            let url = ctx.url_slots(&job.url);
            let _url_turn = url.acquire_owned().await;
            let endpoint = ctx.endpoint(&job.url);
            let _turn = endpoint.acquire_owned().await;
            // Waiting in the queue or for the endpoint may have taken it past its max age.
            if Timestamp::now().millis() > deadline_ms {
                tracing::warn!(url = %job.url, attempts = failures, channel = %job.channel,
                    message = %job.message_id, "webhook delivery given up after its max age");
                WebhookMetrics::inc(&ctx.metrics.expired);
                ctx.store.finish(&job, Outcome::Expired).await;
                return;
            }
            ctx.client.attempt(&job, &ctx.metrics).await
        };
        let outcome = match attempt.verdict {
            Verdict::Delivered => Some(Outcome::Delivered),
            Verdict::Permanent => {
                tracing::warn!(url = %job.url, status = %attempt.detail, channel = %job.channel,
                    message = %job.message_id, "webhook delivery failed permanently");
                Some(Outcome::Failed)
            }
            Verdict::Retry { after } => {
                failures += 1;
                let delay = after.unwrap_or_else(|| {
                    backoff(ctx.cfg.retry_initial, ctx.cfg.retry_max, failures, jitter())
                });
                let next_ms = Timestamp::now().millis() + delay.as_millis() as i64;
                if next_ms > deadline_ms {
                    tracing::warn!(url = %job.url, last = %attempt.detail, attempts = failures,
                        channel = %job.channel, message = %job.message_id,
                        "webhook delivery given up after its max age");
                    Some(Outcome::Expired)
                } else if final_attempt {
                    None
                } else {
                    tracing::debug!(url = %job.url, last = %attempt.detail, ?delay, "webhook retry scheduled");
                    WebhookMetrics::inc(&ctx.metrics.retries);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                    if ctx.stopping() && !memory {
                        None // stays pending in Redis
                    } else {
                        continue;
                    }
                }
            }
        };
        match outcome {
            Some(o) => {
                let counter = match o {
                    Outcome::Delivered => &ctx.metrics.delivered,
                    Outcome::Failed => &ctx.metrics.failed,
                    Outcome::Expired => &ctx.metrics.expired,
                };
                WebhookMetrics::inc(counter);
                ctx.store.finish(&job, o).await;
            }
            None => {
                if let Store::Redis(r) = &ctx.store {
                    r.release(&job);
                } else {
                    WebhookMetrics::inc(&ctx.metrics.failed);
                    tracing::warn!(url = %job.url, last = %attempt.detail, channel = %job.channel,
                        message = %job.message_id, "webhook delivery lost at shutdown (memory engine)");
                }
            }
        }
        return;
    }
}
