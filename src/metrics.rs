//! Counters and gauges, per core, summed when `/metrics` is scraped (Prometheus text).
//!
//! Each core writes only its own `CoreMetrics` (single writer: a relaxed load + store, no
//! locked read-modify-write), padded to its own cache lines; any thread may read them. The
//! control thread has its own block. Nothing here is shared-written across cores. The webhook
//! pool (several threads, off the hot path) has its own block of ordinary atomic counters.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

/// A counter written by exactly one thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    /// For gauges (same single writer).
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }
    /// For gauges (same single writer).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

macro_rules! metric_block {
    ($name:ident { $($field:ident : $kind:literal, $help:literal;)* }) => {
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct $name { $(pub $field: Counter,)* }

        impl $name {
            fn describe() -> &'static [(&'static str, &'static str, &'static str)] {
                &[$((stringify!($field), $kind, $help),)*]
            }
            fn values(&self) -> Vec<u64> {
                vec![$(self.$field.get(),)*]
            }
        }
    };
}

metric_block!(CoreMetrics {
    connections: "gauge", "Open TCP connections (HTTP and WebSocket).";
    ws_connections: "gauge", "Open WebSocket connections.";
    socketio_connections: "gauge", "Open Socket.IO connections (part of the WebSocket connections).";
    subscriptions: "gauge", "Active channel subscriptions.";
    connections_total: "counter", "Connections accepted.";
    http_requests_total: "counter", "HTTP requests answered.";
    messages_in_total: "counter", "WebSocket messages received from clients.";
    messages_out_total: "counter", "WebSocket frames queued to clients.";
    deliveries_total: "counter", "Published messages queued to subscribers.";
    bytes_in_total: "counter", "Bytes read from clients.";
    bytes_out_total: "counter", "Bytes written to clients.";
    errors_sent_total: "counter", "Error frames sent to clients.";
    publishes_refused_busy_total: "counter", "Publishes refused (broker busy) because a queue on their way was full: the control thread's or a core's inbox.";
    queue_drops_total: "counter", "Frames dropped because a subscriber's outbound queue was full (the subscriber is then closed).";
    slow_consumer_closes_total: "counter", "Connections closed (1013) for falling behind.";
    send_gate_forgiven_total: "counter", "Socket writes that stopped counting against server.send_slice because they stayed blocked (a peer not reading) while other writes waited.";
    protocol_closes_total: "counter", "Connections closed for protocol violations.";
    audience_updates_dropped_total: "counter", "Audience-count updates dropped because the engine queue was full.";
    publish_duplicates_total: "counter", "Publishes that repeated an idempotencyKey within the window: answered with the first ack, not published again (memory engine).";
    idempotency_evicted_total: "counter", "Idempotency keys forgotten before their window ended because publish.idempotency_max_keys were kept (memory engine).";
    recoveries_total: "counter", "Subscribes with `since` answered recovered: true.";
    recoveries_failed_total: "counter", "Subscribes with `since` answered recovered: false (other epoch, past retention or recover_max).";
    recovered_messages_total: "counter", "Messages sent to recovering subscribers from history.";
    recovery_overflows_total: "counter", "Catch-ups whose held live messages passed the outbound queue bounds: dropped and read from history instead.";
    http_publishes_total: "counter", "Publishes received over HTTP (single and batch items).";
    sessions_expired_total: "counter", "WebSockets closed (1008) because their token expired.";
    presence_dropped_total: "counter", "Presence joins, leaves or events dropped because a queue on their way was full.";
    socketio_reencoded_total: "counter", "Messages whose Socket.IO frame a core built itself (the message was encoded before the node had Socket.IO connections).";
});

metric_block!(ControlMetrics {
    published_total: "counter", "Messages accepted into history.";
    publish_failures_total: "counter", "Publishes the engine refused.";
    publish_outcomes_unknown_total: "counter", "Publishes answered OUTCOME_UNKNOWN: handed to Redis, which did not answer in time (they may have been published).";
    publishes_refused_backlog_total: "counter", "Publishes refused (broker busy) because server.engine_queue publishes were already waiting for Redis (redis engine).";
    registry_changes_total: "counter", "Channel registry changes.";
    recovery_reads_total: "counter", "History pages read from the engine for recovering subscribers.";
    recovery_reads_shared_total: "counter", "History pages for recovering subscribers answered by a read of the same range (in flight or kept).";
    history_retained: "gauge", "Messages retained in the memory engine.";
    backplane_reconnects_total: "counter", "Redis pub/sub reconnections (each followed by a gap fill).";
    backplane_resyncs_total: "counter", "Times the Redis pub/sub reader fell behind and dropped messages (each followed by a registry reload and a gap fill).";
    backplane_dropped_total: "counter", "Redis pub/sub messages (publish batches, registry announcements) dropped because this node fell behind.";
    backplane_gap_fill_messages_total: "counter", "Messages recovered from Redis streams after a gap.";
    backplane_events_pending: "gauge", "Messages from Redis waiting for the control thread.";
    backplane_lag_ms: "gauge", "Age of the latest message from Redis when it reached this node (ms).";
});

metric_block!(EngineMetrics {
    audience_writes_dropped_total: "counter", "Audience counts (wsAudienceCount) not written to Redis: too many waiting, or Redis refused the write (redis engine).";
    redis_publish_duplicates_total: "counter", "Publishes that repeated an idempotencyKey within the window, decided by the redis publish script: answered with the first ack, not published again.";
});

metric_block!(CdcMetrics {
    cdc_changes_total: "counter", "Row changes read from the PostgreSQL change stream.";
    cdc_transactions_total: "counter", "Transactions read from the PostgreSQL change stream.";
    cdc_changes_skipped_total: "counter", "Row changes not published: no enabled db: channel matches their table, or the table name is not a valid channel name.";
    cdc_duplicates_skipped_total: "counter", "Row changes read again (after a restart or a takeover) and skipped because they were already stored.";
    cdc_gaps_total: "counter", "Times the change stream restarted with a hole (slot invalidated or lost); each sends a GAP message.";
    cdc_reconnects_total: "counter", "Replication sessions started again after an error or a lost connection.";
    cdc_slot_owner: "gauge", "1 while this node reads the replication slot (one node of a cluster does).";
    cdc_lag_bytes: "gauge", "WAL the server has that is not yet stored and acknowledged (bytes).";
    cdc_lag_ms: "gauge", "Commit-to-hand-off age of the latest change handed to the publish path (ms); 0 when caught up.";
    cdc_checkpoint_lsn: "gauge", "The stored change-stream checkpoint (a commit end LSN, as a number).";
});

/// Upper bounds (seconds) of the change stream's delay histograms.
pub const CDC_DELAY_BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// A histogram of delays written by one thread (the change stream) and read on scrape.
#[derive(Debug, Default)]
pub struct DelayHistogram {
    buckets: [Counter; 11],
    count: Counter,
    sum_us: Counter,
}

impl DelayHistogram {
    /// Records one delay in microseconds (negative, from clocks that disagree: counted as 0).
    pub fn observe_us(&self, us: i64) {
        let us = us.max(0) as u64;
        let s = us as f64 / 1e6;
        if let Some(i) = CDC_DELAY_BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].inc();
        }
        self.count.inc();
        self.sum_us.add(us);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP ringcast_{name} {help}");
        let _ = writeln!(out, "# TYPE ringcast_{name} histogram");
        let mut cum = 0;
        for (b, c) in CDC_DELAY_BUCKETS.iter().zip(&self.buckets) {
            cum += c.get();
            let _ = writeln!(out, "ringcast_{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count.get();
        let _ = writeln!(out, "ringcast_{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "ringcast_{name}_sum {}",
            self.sum_us.get() as f64 / 1e6
        );
        let _ = writeln!(out, "ringcast_{name}_count {count}");
    }
}

/// Where a change's time goes before the broker has it, per change: PostgreSQL's commit to
/// its walsender sending it (PostgreSQL's clock throughout), and that send to the change
/// stream reading it (two clocks: meaningful when both run on one machine or are synced).
#[derive(Debug, Default)]
pub struct CdcDelays {
    pub commit_to_send: DelayHistogram,
    pub send_to_read: DelayHistogram,
}

impl CdcDelays {
    fn render(&self, out: &mut String) {
        self.commit_to_send.render(
            out,
            "cdc_commit_to_send_seconds",
            "From a change's commit to PostgreSQL's walsender sending it (PostgreSQL's clock).",
        );
        self.send_to_read.render(
            out,
            "cdc_send_to_read_seconds",
            "From the walsender sending a change to the change stream reading it.",
        );
    }
}

/// Row changes read per table (`ringcast_cdc_table_changes_total{table}`), written by the
/// change-stream thread once per hand-off, read on scrape; not on any core's path.
#[derive(Debug, Default)]
pub struct TableCounts(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl TableCounts {
    pub fn add(&self, counts: &std::collections::HashMap<String, u64>) {
        if counts.is_empty() {
            return;
        }
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (t, n) in counts {
            *m.entry(t.clone()).or_default() += n;
        }
    }

    fn render(&self, out: &mut String) {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP ringcast_cdc_table_changes_total Row changes read from the change stream, per table."
        );
        let _ = writeln!(out, "# TYPE ringcast_cdc_table_changes_total counter");
        for (t, n) in m.iter() {
            let _ = writeln!(
                out,
                "ringcast_cdc_table_changes_total{{table=\"{}\"}} {n}",
                t.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
    }
}

/// Upper bounds (seconds) of the webhook request-duration histogram buckets.
pub const WEBHOOK_LATENCY_BUCKETS: [f64; 10] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The webhook pool's metrics; written from any of its threads (`fetch_add`).
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    pub delivered: AtomicU64,
    /// Permanent failures (4xx other than 408/429, refused targets, bad jobs).
    pub failed: AtomicU64,
    /// Retried until `max_age`, then given up.
    pub expired: AtomicU64,
    /// Not accepted: the hand-off queue was full.
    pub dropped: AtomicU64,
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
    /// Deliveries accepted and not finished (queued, in flight or waiting to retry).
    pub pending: AtomicU64,
    pub in_flight: AtomicU64,
    /// Taken over from another node (Redis engine).
    pub claimed: AtomicU64,
    latency_buckets: [AtomicU64; 10],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl WebhookMetrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub fn dec(c: &AtomicU64) {
        c.fetch_sub(1, Relaxed);
    }

    /// Records one request's duration (answered or not).
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = WEBHOOK_LATENCY_BUCKETS.iter().position(|b| s <= *b) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP ringcast_webhook_deliveries_total Webhook deliveries (one per message and URL) by final outcome."
        );
        let _ = writeln!(out, "# TYPE ringcast_webhook_deliveries_total counter");
        for (outcome, c) in [
            ("delivered", &self.delivered),
            ("failed", &self.failed),
            ("expired", &self.expired),
            ("dropped", &self.dropped),
        ] {
            let _ = writeln!(
                out,
                "ringcast_webhook_deliveries_total{{outcome=\"{outcome}\"}} {}",
                c.load(Relaxed)
            );
        }
        for (name, kind, help, c) in [
            (
                "webhook_attempts_total",
                "counter",
                "Webhook HTTP requests made.",
                &self.attempts,
            ),
            (
                "webhook_retries_total",
                "counter",
                "Webhook attempts scheduled again after a retryable failure.",
                &self.retries,
            ),
            (
                "webhook_claimed_total",
                "counter",
                "Pending webhook deliveries taken over from another node.",
                &self.claimed,
            ),
            (
                "webhook_pending",
                "gauge",
                "Webhook deliveries accepted and not finished (queued, in flight or waiting to retry).",
                &self.pending,
            ),
            (
                "webhook_in_flight",
                "gauge",
                "Webhook HTTP requests in flight.",
                &self.in_flight,
            ),
        ] {
            let _ = writeln!(out, "# HELP ringcast_{name} {help}");
            let _ = writeln!(out, "# TYPE ringcast_{name} {kind}");
            let _ = writeln!(out, "ringcast_{name} {}", c.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP ringcast_webhook_request_duration_seconds Webhook request duration (to the answer, or the timeout)."
        );
        let _ = writeln!(
            out,
            "# TYPE ringcast_webhook_request_duration_seconds histogram"
        );
        let mut cum = 0;
        for (b, c) in WEBHOOK_LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            cum += c.load(Relaxed);
            let _ = writeln!(
                out,
                "ringcast_webhook_request_duration_seconds_bucket{{le=\"{b}\"}} {cum}"
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            out,
            "ringcast_webhook_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "ringcast_webhook_request_duration_seconds_sum {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "ringcast_webhook_request_duration_seconds_count {count}"
        );
    }
}

/// All metrics of one node.
#[derive(Debug)]
pub struct Metrics {
    pub cores: Box<[CoreMetrics]>,
    pub control: ControlMetrics,
    pub engine: std::sync::Arc<EngineMetrics>,
    pub webhook: std::sync::Arc<WebhookMetrics>,
    /// Written by the change-stream thread (`cdc`).
    pub cdc: std::sync::Arc<CdcMetrics>,
    pub cdc_tables: std::sync::Arc<TableCounts>,
    pub cdc_delays: std::sync::Arc<CdcDelays>,
}

impl Metrics {
    pub fn new(workers: usize) -> Self {
        Self {
            cores: (0..workers).map(|_| CoreMetrics::default()).collect(),
            control: ControlMetrics::default(),
            engine: Default::default(),
            webhook: Default::default(),
            cdc: Default::default(),
            cdc_tables: Default::default(),
            cdc_delays: Default::default(),
        }
    }

    /// Whether any core has a Socket.IO connection open (deliveries are then encoded for
    /// Socket.IO too, once, where they are encoded for the raw protocol).
    pub fn has_socketio(&self) -> bool {
        self.cores.iter().any(|c| c.socketio_connections.get() > 0)
    }

    /// Prometheus text exposition; per-core values are summed.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut sums = vec![0u64; CoreMetrics::describe().len()];
        for c in self.cores.iter() {
            for (s, v) in sums.iter_mut().zip(c.values()) {
                *s = s.wrapping_add(v);
            }
        }
        let blocks = [
            (CoreMetrics::describe(), sums),
            (ControlMetrics::describe(), self.control.values()),
            (EngineMetrics::describe(), self.engine.values()),
            (CdcMetrics::describe(), self.cdc.values()),
        ];
        for (desc, vals) in blocks {
            for ((name, kind, help), v) in desc.iter().zip(vals) {
                let _ = writeln!(out, "# HELP ringcast_{name} {help}");
                let _ = writeln!(out, "# TYPE ringcast_{name} {kind}");
                let _ = writeln!(out, "ringcast_{name} {v}");
            }
        }
        self.webhook.render(&mut out);
        self.cdc_tables.render(&mut out);
        self.cdc_delays.render(&mut out);
        let _ = writeln!(out, "# HELP ringcast_workers Core threads.");
        let _ = writeln!(out, "# TYPE ringcast_workers gauge");
        let _ = writeln!(out, "ringcast_workers {}", self.cores.len());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cores() {
        let m = Metrics::new(2);
        m.cores[0].deliveries_total.add(3);
        m.cores[1].deliveries_total.add(4);
        m.cores[1].connections.inc();
        m.cores[1].connections.sub(1);
        let text = m.render();
        assert!(text.contains("ringcast_deliveries_total 7"), "{text}");
        assert!(text.contains("ringcast_connections 0"));
        assert!(text.contains("# TYPE ringcast_subscriptions gauge"));
    }

    #[test]
    fn delay_histograms_are_cumulative() {
        let m = Metrics::new(1);
        m.cdc_delays.commit_to_send.observe_us(300);
        m.cdc_delays.commit_to_send.observe_us(7_000);
        m.cdc_delays.commit_to_send.observe_us(-5);
        let text = m.render();
        for line in [
            "ringcast_cdc_commit_to_send_seconds_bucket{le=\"0.0005\"} 2",
            "ringcast_cdc_commit_to_send_seconds_bucket{le=\"0.005\"} 2",
            "ringcast_cdc_commit_to_send_seconds_bucket{le=\"0.01\"} 3",
            "ringcast_cdc_commit_to_send_seconds_bucket{le=\"+Inf\"} 3",
            "ringcast_cdc_commit_to_send_seconds_count 3",
            "ringcast_cdc_send_to_read_seconds_count 0",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
