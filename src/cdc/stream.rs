//! One reader of the replication slot: connects, prepares the database (`setup`), holds the
//! slot, decodes every committed change into a `db:<table>` message and hands it to the
//! publish path (`handoff`), then acknowledges the commit to PostgreSQL.
//!
//! At least once, no duplicates: a change is identified by its position (commit LSN, place in
//! its transaction). The checkpoint (`checkpoint::Store`) moves to a commit's end LSN only
//! once every change up to it is stored, and only then is that LSN acknowledged, so the slot
//! never moves past what is stored. A session starts at the checkpoint (the server skips the
//! transactions before it, and so does `Begin` here), and a change at or before the last
//! position stored in its channel is skipped, so a transaction handed off in part before a
//! crash is not stored twice.
//!
//! Bounded memory: changes are handed off in batches (`Route::batch`, at most 512) as they
//! arrive, with at most `Route::window` in flight, so a transaction of any size
//! streams through; the transport buffers at most `EVENT_BUFFER` events. Batches are sent
//! when the stream has no event ready or a batch is full, without waiting for the answer to
//! the previous one; the checkpoint moves as their answers come back, in order (each batch
//! knows the last commit whose changes it completes).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    sync::Arc,
    task::Poll,
    time::Duration,
};

use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use serde_json::value::RawValue;
use tokio::sync::watch;

use super::{
    checkpoint::Store,
    handoff::{HandError, Outcome, Route},
    pgoutput::{self, Message, Relation},
    row::{self, Change},
    setup::{self, SetupError},
};
use crate::{
    channel::ChannelName,
    config::PostgresConfig,
    control::SourceMsg,
    engine::SourcePos,
    metrics::{CdcDelays, CdcMetrics, Metrics, TableCounts},
    timestamp::Timestamp,
};

/// Events the transport buffers ahead of this loop.
const EVENT_BUFFER: usize = 4096;
/// How often the position is reported to the server (after a raise).
pub const STATUS_INTERVAL: Duration = Duration::from_millis(100);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// Another session holds the slot (another node of the cluster): wait and try again.
    #[error("the slot is held by another session: {0}")]
    SlotBusy(String),
    /// The connection or the stream broke: reconnect and resume from the checkpoint.
    #[error("{0}")]
    Stream(String),
    /// The node is shutting down.
    #[error("the publish path is closed")]
    Closed,
}

impl From<HandError> for SessionError {
    fn from(e: HandError) -> Self {
        match e {
            HandError::Closed => Self::Closed,
            // Resume from the checkpoint: the store is read again for what it kept.
            e @ HandError::Failed(_) => Self::Stream(e.to_string()),
        }
    }
}

/// The transaction being read.
struct Txn {
    final_lsn: u64,
    commit_ts: String,
    /// Microseconds since 2000-01-01 (PostgreSQL's clock).
    commit_micros: i64,
    seq: u32,
    /// Already stored (it ended before the checkpoint).
    skip: bool,
}

/// What the stream keeps across sessions (reconnects, takeovers).
pub struct Reader {
    cfg: PostgresConfig,
    node_id: String,
    route: Route,
    store: Store,
    metrics: Arc<CdcMetrics>,
    tables: Arc<TableCounts>,
    delays: Arc<CdcDelays>,
    relations: HashMap<u32, Relation>,
    /// Per `db:` channel, the last position stored in it (loaded from the store once).
    stored: HashMap<ChannelName, Option<SourcePos>>,
    /// Every change of every transaction that ended at or before it is stored.
    checkpoint: u64,
    /// The end of the last transaction read (checkpointed once its changes are stored).
    last_commit: u64,
    /// The server's WAL end, as last reported.
    wal_end: u64,
    txn: Option<Txn>,
    pending: Vec<SourceMsg>,
    /// Batches handed over and not answered yet, oldest first, each with the last commit
    /// whose changes it completes and its size.
    inflight: VecDeque<(Answer, u64, usize)>,
    /// The changes in `inflight`.
    inflight_changes: usize,
    per_table: HashMap<String, u64>,
    /// Tables already logged as skipped (once each).
    skipped_logged: HashSet<String>,
    events: [Arc<str>; 4],
    /// A session took the slot since `took_slot` was last asked.
    took: bool,
}

impl Reader {
    pub fn new(
        cfg: PostgresConfig,
        node_id: String,
        route: Route,
        store: Store,
        metrics: &Metrics,
    ) -> Self {
        Self {
            cfg,
            node_id,
            route,
            store,
            metrics: metrics.cdc.clone(),
            tables: metrics.cdc_tables.clone(),
            delays: metrics.cdc_delays.clone(),
            relations: HashMap::new(),
            stored: HashMap::new(),
            checkpoint: 0,
            last_commit: 0,
            wal_end: 0,
            txn: None,
            pending: Vec::new(),
            inflight: VecDeque::new(),
            inflight_changes: 0,
            per_table: HashMap::new(),
            skipped_logged: HashSet::new(),
            events: [
                Arc::from("INSERT"),
                Arc::from("UPDATE"),
                Arc::from("DELETE"),
                Arc::from("GAP"),
            ],
            took: false,
        }
    }

    pub fn metrics(&self) -> Arc<CdcMetrics> {
        self.metrics.clone()
    }

    /// Whether a session took the slot since the last call (resets the backoff).
    pub fn took_slot(&mut self) -> bool {
        std::mem::take(&mut self.took)
    }

    /// Connects and prepares the database, without reading (start-up's first check).
    pub async fn connect(&mut self) -> Result<(ReplicationClient, setup::Ready), SessionError> {
        self.store
            .init()
            .await
            .map_err(|e| SessionError::Stream(e.to_string()))?;
        let stored = self
            .store
            .load()
            .await
            .map_err(|e| SessionError::Stream(e.to_string()))?;
        self.checkpoint = self.checkpoint.max(stored.unwrap_or(0));
        if self.store.is_shared() {
            // Another node may have read the slot since: read its positions afresh.
            self.stored.clear();
        }
        self.last_commit = self.last_commit.max(self.checkpoint);
        let c = &self.cfg;
        let mut rc = ReplicationConfig::new(
            c.host.clone(),
            c.user.clone(),
            c.password.clone(),
            c.dbname.clone(),
            c.slot.clone(),
            c.publication.clone(),
        )
        .with_port(c.port)
        .with_tls(TlsConfig::disabled())
        .with_start_lsn(Lsn(self.checkpoint))
        .with_status_interval(STATUS_INTERVAL)
        .with_wakeup_interval(Duration::from_secs(5))
        .with_buffer_size(EVENT_BUFFER)
        // The walsender writes values as text with its session's settings: pin them.
        .with_options(
            "-c datestyle=ISO,YMD -c timezone=UTC -c extra_float_digits=1 \
             -c intervalstyle=postgres",
        )
        .with_application_name(format!("ringcast-{}", self.node_id));
        if self.checkpoint > 0 {
            rc = rc.with_ack_lsn(Lsn(self.checkpoint));
        }
        let mut client = ReplicationClient::connect_gated(rc)
            .await
            .map_err(|e| setup::connect_error(&e, &self.cfg))?;
        let ready = setup::prepare(&mut client, &self.cfg, self.checkpoint > 0).await?;
        Ok((client, ready))
    }

    /// Takes the slot and reads until `stop` or an error. Returns `Ok` on a clean stop.
    pub async fn run_session(
        &mut self,
        mut client: ReplicationClient,
        ready: setup::Ready,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        client
            .start()
            .await
            .map_err(|e| SessionError::Stream(e.to_string()))?;
        if let Err(e) = client.wait_started().await {
            let m = e.to_string();
            return Err(if m.contains("55006") || m.contains("is active for PID") {
                SessionError::SlotBusy(m)
            } else if m.contains("55000") || m.contains("invalidated") {
                // Invalidated between the check and the start: the next session recreates it.
                SessionError::Stream(m)
            } else {
                setup::connect_error(&e, &self.cfg).into()
            });
        }
        self.took = true;
        self.metrics.cdc_slot_owner.set(1);
        tracing::info!(slot = %self.cfg.slot, from = %setup::lsn_text(self.checkpoint),
            "reading the change stream");
        let r = self.read(&mut client, ready, stop).await;
        // Batches still in flight may be stored by now: wait for their answers, so that the
        // next session skips what they stored (memory engine: nothing else remembers it).
        while !self.inflight.is_empty() {
            let done = oldest(&mut self.inflight).await;
            let _ = self.answered(&client, done).await;
        }
        self.metrics.cdc_slot_owner.set(0);
        if r.is_ok() {
            // The last acknowledgement goes out with the next status update: let it.
            tokio::time::sleep(STATUS_INTERVAL + Duration::from_millis(50)).await;
            let _ = client.shutdown().await;
        }
        self.txn = None;
        self.pending.clear();
        r
    }

    async fn read(
        &mut self,
        client: &mut ReplicationClient,
        ready: setup::Ready,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        if let Some(reason) = &ready.gap {
            self.announce_gap(client, reason, &ready).await?;
        }
        loop {
            let ev = match poll_once(client.recv()) {
                Some(ev) => ev,
                None => {
                    self.flush(client).await?;
                    self.checkpoint_idle(client).await?;
                    tokio::select! {
                        _ = stop.changed() => {
                            self.settle(client).await?;
                            return Ok(());
                        }
                        ev = client.recv() => ev,
                        done = oldest(&mut self.inflight) => {
                            self.answered(client, done).await?;
                            continue;
                        }
                    }
                }
            };
            let ev = match ev {
                Ok(Some(ev)) => ev,
                Ok(None) => return Err(SessionError::Stream("the stream ended".into())),
                Err(e) => return Err(SessionError::Stream(e.to_string())),
            };
            self.on_event(client, ev).await?;
        }
    }

    async fn on_event(
        &mut self,
        client: &ReplicationClient,
        ev: ReplicationEvent,
    ) -> Result<(), SessionError> {
        match ev {
            ReplicationEvent::Begin {
                final_lsn,
                commit_time_micros,
                ..
            } => {
                self.txn = Some(Txn {
                    final_lsn: final_lsn.0,
                    commit_ts: row::pg_time_to_rfc3339(commit_time_micros),
                    commit_micros: commit_time_micros,
                    seq: 0,
                    skip: final_lsn.0 < self.checkpoint,
                });
            }
            ReplicationEvent::XLogData {
                data,
                wal_end,
                server_time_micros,
                ..
            } => {
                self.wal_end = self.wal_end.max(wal_end.0);
                if let Some(t) = &self.txn {
                    let d = &self.delays;
                    d.commit_to_send
                        .observe_us(server_time_micros - t.commit_micros);
                    d.send_to_read
                        .observe_us(now_pg_micros() - server_time_micros);
                }
                let msg = pgoutput::parse(&data)
                    .map_err(|e| SessionError::Stream(format!("pgoutput: {e}")))?;
                match msg {
                    Message::Relation(r) => {
                        self.relations.insert(r.id, r);
                    }
                    msg => {
                        if let Some(change) = Change::from_message(&msg) {
                            self.on_change(change).await?;
                        }
                    }
                }
                if self.pending.len() >= self.route.batch() {
                    self.flush(client).await?;
                }
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                if self.txn.take().is_some() {
                    self.metrics.cdc_transactions_total.inc();
                }
                self.last_commit = self.last_commit.max(end_lsn.0);
                self.wal_end = self.wal_end.max(end_lsn.0);
                if self.pending.len() >= self.route.batch() {
                    self.flush(client).await?;
                }
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                self.wal_end = self.wal_end.max(wal_end.0);
                // Nothing in flight: the slot may move past WAL of tables not published.
                if self.txn.is_none()
                    && self.pending.is_empty()
                    && self.last_commit == self.checkpoint
                {
                    self.checkpoint = self.checkpoint.max(wal_end.0);
                    self.last_commit = self.checkpoint;
                    client.update_applied_lsn(Lsn(self.checkpoint));
                    self.metrics.cdc_lag_ms.set(0);
                }
                self.report_lag();
            }
            ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(())
    }

    /// One row change: a `db:<table>` message in `pending`, unless already stored.
    async fn on_change(&mut self, change: Change<'_>) -> Result<(), SessionError> {
        self.metrics.cdc_changes_total.inc();
        let Some(txn) = self.txn.as_mut() else {
            return Err(SessionError::Stream(
                "a change outside a transaction".into(),
            ));
        };
        txn.seq += 1;
        if txn.skip {
            self.metrics.cdc_duplicates_skipped_total.inc();
            return Ok(());
        }
        let pos = SourcePos {
            lsn: txn.final_lsn,
            seq: txn.seq,
        };
        let ts = txn.commit_ts.clone();
        let Some(rel) = self.relations.get(&change.rel) else {
            return Err(SessionError::Stream(format!(
                "a change to relation {} before its Relation message",
                change.rel
            )));
        };
        let qualified = format!("{}.{}", rel.schema, rel.name);
        *self.per_table.entry(qualified.clone()).or_default() += 1;
        let Ok(channel) = ChannelName::parse(&format!("db:{}", rel.name)) else {
            self.skip_table(&qualified, "its name is not a valid channel name");
            return Ok(());
        };
        let payload = change
            .payload(rel, &ts)
            .map_err(|e| SessionError::Stream(format!("{qualified}: {e}")))?;
        if self.already_stored(&channel, pos).await? {
            self.metrics.cdc_duplicates_skipped_total.inc();
            return Ok(());
        }
        let payload = RawValue::from_string(String::from_utf8(payload).map_err(|_| {
            SessionError::Stream(format!("{qualified}: a payload that is not UTF-8"))
        })?)
        .map_err(|e| SessionError::Stream(format!("{qualified}: invalid payload JSON: {e}")))?;
        let event = self.events[change.event as usize].clone();
        self.pending.push(SourceMsg {
            channel,
            event,
            payload: Arc::from(payload),
            pos,
        });
        Ok(())
    }

    /// Whether `ch` already has the change at `pos` (or a later one).
    async fn already_stored(
        &mut self,
        ch: &ChannelName,
        pos: SourcePos,
    ) -> Result<bool, SessionError> {
        if !self.stored.contains_key(ch) {
            let p = self
                .store
                .channel_pos(ch)
                .await
                .map_err(|e| SessionError::Stream(e.to_string()))?;
            self.stored.insert(ch.clone(), p);
        }
        Ok(self.stored[ch].is_some_and(|s| pos <= s))
    }

    fn skip_table(&mut self, table: &str, why: &str) {
        self.metrics.cdc_changes_skipped_total.inc();
        if self.skipped_logged.insert(table.to_string()) {
            tracing::warn!(table, "changes to this table are not published: {why}");
        }
    }

    /// Hands `pending` to the publish path (waiting first for the oldest batch in flight if
    /// the window is full).
    async fn flush(&mut self, client: &ReplicationClient) -> Result<(), SessionError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let w = self.route.window();
        while !self.inflight.is_empty()
            && (self.inflight.len() >= w.batches
                || self.inflight_changes + self.pending.len() > w.changes)
        {
            let done = oldest(&mut self.inflight).await;
            self.answered(client, done).await?;
        }
        let msgs = std::mem::take(&mut self.pending);
        let n = msgs.len();
        let sent = self.route.send(msgs).await?;
        let route = self.route.clone();
        self.inflight
            .push_back((tokio::spawn(sent.wait(route)), self.last_commit, n));
        self.inflight_changes += n;
        if let Some(t) = &self.txn {
            self.metrics
                .cdc_lag_ms
                .set(((now_pg_micros() - t.commit_micros) / 1000).max(0) as u64);
        }
        self.tables.add(&self.per_table);
        self.per_table.clear();
        Ok(())
    }

    /// The oldest batch in flight was answered: note what was stored or skipped, then move
    /// the checkpoint to the last commit it completes.
    async fn answered(
        &mut self,
        client: &ReplicationClient,
        done: Result<(Vec<SourceMsg>, Outcome), HandError>,
    ) -> Result<(), SessionError> {
        let (_, upto, n) = self
            .inflight
            .pop_front()
            .expect("an answered batch was in flight");
        self.inflight_changes -= n;
        let (msgs, out) = done?;
        for &i in &out.published {
            let m = &msgs[i];
            let e = self.stored.entry(m.channel.clone()).or_default();
            *e = Some(e.map_or(m.pos, |p| p.max(m.pos)));
        }
        for &i in &out.no_channel {
            let ch = msgs[i].channel.clone();
            self.skip_table(
                ch.as_str(),
                "no enabled channel matches it (create one, e.g. pattern `db:*`)",
            );
        }
        self.advance(client, upto).await
    }

    /// With nothing pending or in flight, every commit read is stored: checkpoint it.
    async fn checkpoint_idle(&mut self, client: &ReplicationClient) -> Result<(), SessionError> {
        if self.pending.is_empty() && self.inflight.is_empty() {
            self.advance(client, self.last_commit).await?;
            if self.txn.is_none() {
                self.metrics.cdc_lag_ms.set(0);
            }
        }
        self.report_lag();
        Ok(())
    }

    /// Hands off what is pending and waits for every answer, then checkpoints.
    async fn settle(&mut self, client: &ReplicationClient) -> Result<(), SessionError> {
        self.flush(client).await?;
        while !self.inflight.is_empty() {
            let done = oldest(&mut self.inflight).await;
            self.answered(client, done).await?;
        }
        self.checkpoint_idle(client).await
    }

    /// Records that every change up to commit end `lsn` is stored, then acknowledges it.
    async fn advance(&mut self, client: &ReplicationClient, lsn: u64) -> Result<(), SessionError> {
        if lsn <= self.checkpoint {
            return Ok(());
        }
        self.store
            .save(lsn)
            .await
            .map_err(|e| SessionError::Stream(e.to_string()))?;
        self.checkpoint = lsn;
        client.update_applied_lsn(Lsn(lsn));
        self.metrics.cdc_checkpoint_lsn.set(lsn);
        Ok(())
    }

    fn report_lag(&self) {
        self.metrics
            .cdc_lag_bytes
            .set(self.wal_end.saturating_sub(self.checkpoint));
    }

    /// The slot lost changes: a `GAP` message on the channel of each published table, so
    /// subscribers know to read the table again.
    async fn announce_gap(
        &mut self,
        client: &ReplicationClient,
        reason: &str,
        ready: &setup::Ready,
    ) -> Result<(), SessionError> {
        self.metrics.cdc_gaps_total.inc();
        tracing::error!(slot = %self.cfg.slot, tables = ready.tables.len(), "{reason}");
        // Positions from the lost stream mean nothing now.
        self.stored.clear();
        let now = Timestamp::now().to_rfc3339();
        let pos = SourcePos {
            lsn: ready.slot_lsn,
            seq: 0,
        };
        let mut msgs = Vec::new();
        let mut seen = HashSet::new();
        for (schema, table) in &ready.tables {
            let Ok(channel) = ChannelName::parse(&format!("db:{table}")) else {
                continue;
            };
            let payload = serde_json::json!({
                "schema": schema,
                "table": table,
                "commit_timestamp": now,
                "eventType": "GAP",
                "new": null,
                "old": null,
                "reason": reason,
            });
            let Ok(raw) = RawValue::from_string(payload.to_string()) else {
                continue;
            };
            if seen.insert((channel.clone(), schema.clone())) {
                msgs.push(SourceMsg {
                    channel,
                    event: self.events[3].clone(),
                    payload: Arc::from(raw),
                    pos,
                });
            }
        }
        self.pending = msgs;
        self.settle(client).await?;
        self.checkpoint = self.checkpoint.max(ready.slot_lsn);
        self.last_commit = self.checkpoint;
        self.store
            .save(self.checkpoint)
            .await
            .map_err(|e| SessionError::Stream(e.to_string()))?;
        Ok(())
    }
}

/// A batch's answer, awaited beside the stream (a task of its own).
type Answer = tokio::task::JoinHandle<Result<(Vec<SourceMsg>, Outcome), HandError>>;

/// The answer of the oldest batch in flight (pending forever if there is none).
async fn oldest(
    q: &mut VecDeque<(Answer, u64, usize)>,
) -> Result<(Vec<SourceMsg>, Outcome), HandError> {
    match q.front_mut() {
        Some((a, _, _)) => a
            .await
            .unwrap_or_else(|e| Err(HandError::Failed(format!("hand-off task: {e}")))),
        None => std::future::pending().await,
    }
}

/// Now, in microseconds since 2000-01-01 (PostgreSQL's epoch).
fn now_pg_micros() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_micros() as i64 - PG_EPOCH_UNIX_MS * 1000
}

/// Milliseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX_MS: i64 = 946_684_800_000;

/// Polls a future once: its output if it is ready now.
fn poll_once<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let waker = std::task::Waker::noop();
    match f.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}
