//! The `db:<table>` change source: reads a durable PostgreSQL logical replication slot
//! (pgoutput) and publishes every committed row change as a `message` on `db:<table>`, through
//! the same publish path as a client (`handoff`), at least once and without duplicates
//! (`stream`, `checkpoint`).
//!
//! Runs on a thread of its own (`ringcast-cdc`, a current-thread tokio runtime: the
//! replication client is tokio-only); never on a core. Cores only see the resulting messages.
//!
//! - `setup` checks and prepares the database (wal_level, publication, slot);
//! - `stream` reads one session of the slot and hands changes off;
//! - `pgoutput` decodes the protocol, `row` builds the payload, `value` types the values;
//! - `checkpoint` keeps how far the stream got (in process, or in Redis);
//! - `handoff` routes changes to the owner cores (memory engine) or the control thread (redis).
//!
//! Faults: a lost connection or a restarting server is retried with backoff (100 ms to 5 s)
//! and resumes at the checkpoint. Another node holding the slot (55006) makes this one a
//! standby that tries again every `STANDBY_RETRY`. A database this node cannot prepare
//! refuses the start with the SQL to run; later, the same problem is logged and retried.

pub mod checkpoint;
pub mod handoff;
pub mod pgoutput;
pub mod row;
pub mod setup;
pub mod stream;
pub mod value;

use std::{thread::JoinHandle, time::Duration};

use tokio::sync::watch;

use crate::{config::PostgresConfig, metrics::Metrics};
use checkpoint::Store;
pub use handoff::Route;
use setup::SetupError;
use stream::{Reader, SessionError};

/// How often a standby node tries to take the slot.
pub const STANDBY_RETRY: Duration = Duration::from_secs(1);
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// How long the start waits for the first check of the database.
const FIRST_CHECK: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    /// The database cannot be used as configured; the message says what to run.
    #[error("postgres: {0}")]
    Setup(String),
    #[error("postgres: {0}")]
    Start(String),
}

/// Where the change stream keeps its checkpoint.
pub enum StoreKind {
    Memory,
    Redis(String),
}

/// The running change stream; stopping it lets the last acknowledgement out.
pub struct CdcHandle {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl CdcHandle {
    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CdcHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the change stream and waits for its first check of the database: a database this
/// node cannot prepare is an error (with the SQL to run); one that cannot be reached yet is
/// retried in the background.
pub fn start(
    cfg: PostgresConfig,
    node_id: String,
    route: Route,
    store: StoreKind,
    metrics: &Metrics,
) -> Result<CdcHandle, CdcError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let store = match store {
        StoreKind::Memory => Store::memory(),
        StoreKind::Redis(url) => {
            Store::redis(&url, &cfg.slot).map_err(|e| CdcError::Start(e.to_string()))?
        }
    };
    let reader = Reader::new(cfg, node_id, route, store, metrics);
    let thread = std::thread::Builder::new()
        .name("ringcast-cdc".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = first_tx.send(Err(CdcError::Start(e.to_string())));
                    return;
                }
            };
            rt.block_on(run(reader, stop_rx, first_tx));
        })
        .map_err(|e| CdcError::Start(e.to_string()))?;
    let mut handle = CdcHandle {
        stop: stop_tx,
        thread: Some(thread),
    };
    match first_rx.recv_timeout(FIRST_CHECK) {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            handle.stop();
            Err(e)
        }
        Err(_) => {
            tracing::warn!("PostgreSQL has not answered yet; the change stream keeps trying");
            Ok(handle)
        }
    }
}

type First = std::sync::mpsc::Sender<Result<(), CdcError>>;

/// Sessions one after another until stopped.
async fn run(mut reader: Reader, mut stop: watch::Receiver<bool>, first: First) {
    let mut first = Some(first);
    let mut pause = BACKOFF.0;
    let mut standby_logged = false;
    let metrics = reader.metrics();
    loop {
        if *stop.borrow() {
            return;
        }
        let r = match reader.connect().await {
            Ok((client, ready)) => {
                if let Some(f) = first.take() {
                    let _ = f.send(Ok(()));
                }
                reader.run_session(client, ready, &mut stop).await
            }
            Err(e) => Err(e),
        };
        let wait = match r {
            Ok(()) | Err(SessionError::Closed) => return,
            Err(SessionError::Setup(SetupError::Fatal(m))) => {
                if let Some(f) = first.take() {
                    let _ = f.send(Err(CdcError::Setup(m)));
                    return;
                }
                tracing::error!("the change stream cannot go on: {m}");
                pause = BACKOFF.1;
                pause
            }
            Err(SessionError::SlotBusy(m)) => {
                if !standby_logged {
                    standby_logged = true;
                    tracing::info!(detail = %m, "another session reads the slot; standing by");
                }
                STANDBY_RETRY
            }
            Err(e) => {
                if let Some(f) = first.take() {
                    tracing::warn!(error = %e, "PostgreSQL is not reachable; retrying");
                    let _ = f.send(Ok(()));
                } else {
                    tracing::warn!(error = %e, "the change stream broke; resuming from the checkpoint");
                }
                metrics.cdc_reconnects_total.inc();
                let p = pause;
                pause = (pause * 2).min(BACKOFF.1);
                p
            }
        };
        if reader.took_slot() {
            pause = BACKOFF.0;
            standby_logged = false;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}
