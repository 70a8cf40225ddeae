//! Counters and gauges, per core, summed when `/metrics` is scraped (Prometheus text).
//!
//! Each core writes only its own `CoreMetrics` (single writer: a relaxed load + store, no
//! locked read-modify-write), padded to its own cache lines; any thread may read them. The
//! control thread has its own block. Nothing here is shared-written across cores.

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
    subscriptions: "gauge", "Active channel subscriptions.";
    connections_total: "counter", "Connections accepted.";
    http_requests_total: "counter", "HTTP requests answered.";
    messages_in_total: "counter", "WebSocket messages received from clients.";
    messages_out_total: "counter", "WebSocket frames queued to clients.";
    deliveries_total: "counter", "Published messages queued to subscribers.";
    bytes_in_total: "counter", "Bytes read from clients.";
    bytes_out_total: "counter", "Bytes written to clients.";
    errors_sent_total: "counter", "Error frames sent to clients.";
    publishes_refused_busy_total: "counter", "Publishes refused because the engine queue was full.";
    queue_drops_total: "counter", "Frames dropped because a subscriber's outbound queue was full (the subscriber is then closed).";
    slow_consumer_closes_total: "counter", "Connections closed (1013) for falling behind.";
    protocol_closes_total: "counter", "Connections closed for protocol violations.";
    audience_updates_dropped_total: "counter", "Audience-count updates dropped because the engine queue was full.";
});

metric_block!(ControlMetrics {
    published_total: "counter", "Messages accepted into history.";
    publish_failures_total: "counter", "Publishes the engine refused.";
    registry_changes_total: "counter", "Channel registry changes.";
    history_retained: "gauge", "Messages retained in the memory engine.";
    backplane_reconnects_total: "counter", "Redis pub/sub reconnections (each followed by a gap fill).";
    backplane_gap_fill_messages_total: "counter", "Messages recovered from Redis streams after a gap.";
    backplane_events_pending: "gauge", "Messages from Redis waiting for the control thread.";
    backplane_lag_ms: "gauge", "Age of the latest message from Redis when it reached this node (ms).";
});

/// All metrics of one node.
#[derive(Debug)]
pub struct Metrics {
    pub cores: Box<[CoreMetrics]>,
    pub control: ControlMetrics,
}

impl Metrics {
    pub fn new(workers: usize) -> Self {
        Self {
            cores: (0..workers).map(|_| CoreMetrics::default()).collect(),
            control: ControlMetrics::default(),
        }
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
        ];
        for (desc, vals) in blocks {
            for ((name, kind, help), v) in desc.iter().zip(vals) {
                let _ = writeln!(out, "# HELP ringcast_{name} {help}");
                let _ = writeln!(out, "# TYPE ringcast_{name} {kind}");
                let _ = writeln!(out, "ringcast_{name} {v}");
            }
        }
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
}
