//! Starting and stopping a node: binds the listeners, starts the webhook pool, the control
//! thread and one core thread per worker, and hands back a `ServerHandle` whose `shutdown`
//! closes everything gracefully (cores, then control, then the webhook flush). Used by `main` and by the integration tests (which start real servers on
//! port 0 in-process).

mod core_thread;
pub mod listen;

use std::{net::SocketAddr, sync::Arc, thread::JoinHandle};

use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    channel::ChannelTable,
    config::{Config, EngineKind},
    control::Control,
    control::{ControlMsg, CoreMsg},
    core::NodeShared,
    engine::{
        Engine, Sequencing,
        memory::{MemoryEngine, Retention},
        redis::{RedisEngine, RedisRetention},
    },
    metrics::Metrics,
    policy::PolicySet,
    webhook::{Backend, WebhookPool},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Listen(#[from] listen::ListenError),
    #[error("engine failed to start: {0}")]
    Engine(String),
    #[error("core failed to start: {0}")]
    Core(String),
    #[error("thread spawn failed: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("webhook pool failed to start: {0}")]
    Webhooks(#[from] crate::webhook::PoolError),
    #[error(transparent)]
    Postgres(#[from] crate::cdc::CdcError),
}

pub struct ServerHandle {
    addr: SocketAddr,
    drivers: Vec<&'static str>,
    shared: Arc<NodeShared>,
    shutdown: watch::Sender<bool>,
    cores: Vec<JoinHandle<()>>,
    control_stop: Option<oneshot::Sender<()>>,
    control: Option<JoinHandle<()>>,
    webhooks: Option<WebhookPool>,
    /// The database change stream, when `[postgres]` is set.
    cdc: Option<crate::cdc::CdcHandle>,
    /// The `ringcast-jwks` thread, when `auth.jwks_url` is set.
    jwks: Option<crate::auth::jwks::JwksHandle>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The monoio driver each core runs on.
    pub fn drivers(&self) -> &[&'static str] {
        &self.drivers
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Stops accepting, closes WebSockets with 1001, waits for the cores (bounded by the
    /// shutdown grace), then stops the control thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let deadline = std::time::Instant::now() + self.shared.config.shutdown_grace;
        // First: it publishes through the cores and the control thread.
        if let Some(mut c) = self.cdc.take() {
            c.stop();
        }
        let _ = self.shutdown.send(true);
        for c in self.cores.drain(..) {
            let _ = c.join();
        }
        if let Some(s) = self.control_stop.take() {
            let _ = s.send(());
        }
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
        // Last: nothing new can be published now; pending deliveries get until the deadline.
        if let Some(w) = self.webhooks.take() {
            w.shutdown(deadline);
        }
        if let Some(mut j) = self.jwks.take() {
            j.stop();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn start(config: Config) -> Result<ServerHandle, StartError> {
    let workers = config.workers.clamp(1, 64); // validated: 1..=64
    let listeners = listen::bind(config.listen, workers)?;
    let addr = listeners[0]
        .local_addr()
        .map_err(|e| StartError::Core(e.to_string()))?;
    // Before the cores, so the first key set is there when they accept.
    let (jwks_store, jwks) = match &config.jwks_url {
        Some(url) => {
            let (store, requests) = crate::auth::JwksStore::new();
            let handle =
                crate::auth::jwks::start(url, config.jwks_refresh, store.clone(), requests)?;
            (Some(store), Some(handle))
        }
        None => (None, None),
    };
    let shared = Arc::new(NodeShared {
        metrics: Metrics::new(workers),
        engine_name: match config.engine {
            EngineKind::Memory => "memory",
            EngineKind::Redis => "redis",
        },
        sequencing: match config.engine {
            EngineKind::Memory => Sequencing::Cores,
            EngineKind::Redis => Sequencing::Engine,
        },
        node_id: config.node_id.clone(),
        epoch: crate::engine::new_epoch(),
        jwks: jwks_store,
        config,
    });
    let cfg = &shared.config;

    let (control_tx, control_rx) = mpsc::channel(cfg.engine_queue);
    let mut core_txs = Vec::with_capacity(workers);
    let mut core_rxs = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = mpsc::channel(cfg.core_queue);
        core_txs.push(tx);
        core_rxs.push(rx);
    }

    // Memory engine: the webhook pool starts first (the control thread hands deliveries to
    // it). Redis engine: it reads them from Redis, and starts once the engine has connected.
    let mut webhooks = match cfg.engine {
        EngineKind::Memory => Some(WebhookPool::start(
            &cfg.webhooks,
            shared.metrics.webhook.clone(),
            Backend::Memory {
                control: control_tx.clone(),
            },
        )?),
        EngineKind::Redis => None,
    };
    let webhook_tx = webhooks.as_ref().and_then(|w| w.sender());

    // Control thread: owns the engine and registry; reports the initial table back.
    let (table_tx, table_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let control_shared = shared.clone();
    let peers = core_txs.clone();
    let thread_name = match cfg.engine {
        EngineKind::Memory => "ringcast-control",
        EngineKind::Redis => "ringcast-backplane",
    };
    let control = std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = table_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let cfg = &control_shared.config;
                let started = ControlStart {
                    cores: core_txs,
                    shared: control_shared.clone(),
                    table_tx,
                    rx: control_rx,
                    stop: stop_rx,
                    webhooks: webhook_tx,
                };
                match cfg.engine {
                    EngineKind::Memory => {
                        let engine = MemoryEngine::new(Retention {
                            per_channel: cfg.history_per_channel,
                            max_age: cfg.history_max_age,
                            max_total: cfg.history_max_total,
                            max_bytes: cfg.history_max_bytes,
                        });
                        started.serve(engine).await;
                    }
                    EngineKind::Redis => {
                        let url = cfg.redis_url.clone().unwrap_or_default();
                        let retention = RedisRetention {
                            per_channel: cfg.history_per_channel,
                            max_total: cfg.history_max_total,
                            max_age: cfg.history_max_age,
                        };
                        match RedisEngine::connect(
                            &url,
                            retention,
                            cfg.idempotency_window,
                            cfg.redis_pubsub_buffer,
                            control_shared.metrics.engine.clone(),
                            control_shared.metrics.webhook.clone(),
                        )
                        .await
                        {
                            Ok(engine) => started.serve(engine).await,
                            Err(e) => {
                                let _ = started.table_tx.send(Err(format!("redis at {url}: {e}")));
                            }
                        }
                    }
                }
            });
        })?;
    let (table, policies) = table_rx
        .recv()
        .map_err(|_| StartError::Engine("control thread died".into()))?
        .map_err(StartError::Engine)?;
    if webhooks.is_none() {
        let url = cfg.redis_url.clone().unwrap_or_default();
        let backend = Backend::Redis {
            url: url.clone(),
            node_id: cfg.node_id.clone(),
        };
        webhooks = Some(
            WebhookPool::start(&cfg.webhooks, shared.metrics.webhook.clone(), backend)
                .map_err(|e| StartError::Engine(format!("redis at {url} (webhooks): {e}")))?,
        );
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut cores = Vec::with_capacity(workers);
    for (id, (listener, inbox)) in listeners.into_iter().zip(core_rxs).enumerate() {
        cores.push(core_thread::spawn(core_thread::CoreStart {
            id,
            shared: shared.clone(),
            listener,
            table: table.clone(),
            policies: policies.clone(),
            control: control_tx.clone(),
            peers: peers.clone(),
            inbox,
            shutdown: shutdown_rx.clone(),
            ready: ready_tx.clone(),
        })?);
    }
    let cdc_route = match cfg.engine {
        EngineKind::Memory => crate::cdc::Route::Cores {
            cores: peers.clone(),
            control: control_tx.clone(),
            queue: cfg.core_queue.min(cfg.engine_queue),
        },
        EngineKind::Redis => crate::cdc::Route::Control(control_tx.clone()),
    };
    drop(control_tx);
    drop(ready_tx);
    let mut handle = ServerHandle {
        addr,
        drivers: Vec::new(),
        shared,
        shutdown: shutdown_tx,
        cores,
        control_stop: Some(stop_tx),
        control: Some(control),
        webhooks,
        cdc: None,
        jwks,
    };
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(d)) => handle.drivers.push(d),
            Ok(Err(e)) => return Err(StartError::Core(e)),
            Err(_) => return Err(StartError::Core("a core thread exited early".into())),
        }
    }
    if let Some(pg) = handle.shared.config.postgres.clone() {
        let store = match handle.shared.config.engine {
            EngineKind::Memory => crate::cdc::StoreKind::Memory,
            EngineKind::Redis => crate::cdc::StoreKind::Redis(
                handle.shared.config.redis_url.clone().unwrap_or_default(),
            ),
        };
        handle.cdc = Some(crate::cdc::start(
            pg,
            handle.shared.node_id.clone(),
            cdc_route,
            store,
            &handle.shared.metrics,
        )?);
    }
    Ok(handle)
}

/// What the cores start with: the channel table and the policies in force.
type Initial = (Arc<ChannelTable>, Arc<PolicySet>);

/// What the control thread needs to serve, whichever engine it runs.
struct ControlStart {
    cores: Vec<mpsc::Sender<CoreMsg>>,
    shared: Arc<NodeShared>,
    /// The table and the policies the cores start with, or why the engine did not start.
    table_tx: std::sync::mpsc::Sender<Result<Initial, String>>,
    rx: mpsc::Receiver<ControlMsg>,
    stop: oneshot::Receiver<()>,
    webhooks: Option<crate::webhook::WebhookTx>,
}

impl ControlStart {
    async fn serve<E: Engine>(self, engine: E) {
        match Control::new(engine, self.cores, self.shared, self.webhooks).await {
            Ok(c) => {
                let _ = self.table_tx.send(Ok((c.table(), c.policies())));
                tokio::select! {
                    _ = c.run(self.rx) => {}
                    _ = self.stop => {}
                }
            }
            Err(e) => {
                let _ = self.table_tx.send(Err(e.to_string()));
            }
        }
    }
}
