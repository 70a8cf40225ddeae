//! The result of a run: one struct per kind of run ([`Report`] for the load modes,
//! [`SinkReport`] for `webhook-sink`), printed as a human table (default) or as one JSON object
//! on stdout (`--json`). Fields that a mode does not measure are `null` in JSON.

use hdrhistogram::Histogram;
use serde::Serialize;

/// One second of `latency_by_second`.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct SecondRow {
    pub second: u64,
    pub delivered: u64,
    pub over_10ms: u64,
    pub max_ms: f64,
    /// Percentiles of the second's deliveries (log buckets: within 6 %).
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Percentiles in milliseconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Pct {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub samples: u64,
}

impl Pct {
    /// From a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            samples: h.len(),
        }
    }

    pub fn line(&self) -> String {
        if self.samples == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

/// One subscriber protocol's part of a `fanout` run (`by_protocol`).
#[derive(Debug, Default, Serialize)]
pub struct ProtoReport {
    /// `"raw"` or `"socketio"`.
    pub protocol: &'static str,
    pub subs: usize,
    pub connected: u64,
    /// Subscribers whose connection ended before the run did.
    pub disconnects: u64,
    pub delivered: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub beyond_acked: u64,
    pub unparsed: u64,
    /// `"offset"` / `"seq"` (raw, as the run's `order_check`), `"publisher_seq"` (socketio:
    /// each publisher's payload `seq`, apart).
    pub order_check: &'static str,
    pub deliveries_per_sec: f64,
    pub latency_ms: Pct,
    /// Socket.IO only: deliveries from a publisher of another channel, presence events
    /// received (ignored), Engine.IO pings answered, and subscribers that went longer than
    /// pingInterval + pingTimeout without a ping.
    pub misrouted: Option<u64>,
    pub presence_events: Option<u64>,
    pub pings: Option<u64>,
    pub ping_timeouts: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub ok: bool,
    /// `fanout`: the subscribers' protocol, `"raw"`, `"socketio"` or `"mixed"` (publishers
    /// always speak raw). `null` in the other modes.
    pub protocol: Option<&'static str>,
    pub urls: Vec<String>,
    pub threads: usize,
    pub subs: usize,
    pub publishers: usize,
    pub channels: usize,
    pub conns: usize,
    /// Messages per second per publisher (0 = as fast as acks allow).
    pub rate: f64,
    pub size: usize,
    pub duration_s: f64,
    /// `--webhook-url`: the run's channels POST every message to these (empty: no webhooks).
    pub webhook_urls: Vec<String>,

    pub connected: u64,
    pub connect_failures: u64,
    pub connects_per_sec: Option<f64>,
    pub connect_ms: Pct,

    pub published: u64,
    pub acked: u64,
    pub rate_limited: u64,
    pub publish_errors: u64,
    pub publishes_per_sec: f64,
    pub ack_ms: Pct,

    pub delivered: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Deliveries past the last acknowledged offset (stored, ack not seen in time).
    pub beyond_acked: u64,
    pub unparsed: u64,
    /// How loss and order were judged: `"offset"` (the broker's offsets) or `"seq"` (no
    /// offsets in the frames: payload `seq` and ack counts; valid with one publisher per
    /// channel only). `null` in modes without publishes.
    pub order_check: Option<&'static str>,
    pub disconnects: u64,
    pub server_errors: u64,
    pub deliveries_per_sec: f64,
    pub latency_ms: Pct,
    /// Per second of the run (from the first delivery): deliveries, how many took over 10 ms,
    /// and the slowest. A few bad seconds mean stalls; late ones everywhere, a steady spread.
    pub latency_by_second: Vec<SecondRow>,
    /// `fanout`: the same counts per subscriber protocol (one entry per protocol in the run).
    /// The totals above add them up; broker CPU is not split (it is one process).
    pub by_protocol: Vec<ProtoReport>,

    pub server_cpu_pct: Option<f64>,
    /// The kernel-time part of `server_cpu_pct`.
    pub server_cpu_sys_pct: Option<f64>,
    /// Broker CPU time per delivered message (fanout) or per acked publish (publish).
    pub server_cpu_us_per_msg: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    pub server_rss_peak_bytes: Option<u64>,
    pub server_rss_before_bytes: Option<u64>,
    pub rss_per_conn_bytes: Option<f64>,
    pub client_cpu_pct: f64,
    pub client_rss_bytes: u64,
    /// Whole-machine busy CPU % over the window (100 = one core), and what is left of it
    /// after the broker and this harness: softirq network work and any other load.
    pub machine_cpu_pct: Option<f64>,
    pub other_cpu_pct: Option<f64>,
    pub machine_cores: usize,

    pub first_error: Option<String>,
    pub warnings: Vec<String>,
}

/// What `main` needs of a finished run: its verdict and its two ways of printing.
pub trait Outcome {
    fn ok(&self) -> bool;
    fn print_table(&self);
    fn print_json(&self) -> anyhow::Result<()>;
}

impl Outcome for Report {
    fn ok(&self) -> bool {
        self.ok
    }
    fn print_table(&self) {
        Report::print_table(self)
    }
    fn print_json(&self) -> anyhow::Result<()> {
        Report::print_json(self)
    }
}

/// What `webhook-sink` received.
#[derive(Debug, Default, Serialize)]
pub struct SinkReport {
    pub mode: &'static str,
    pub ok: bool,
    pub listen: String,
    /// The status answered (`"200"`, `"503"`, ..) or `"hang"`.
    pub reply: String,
    pub delay_ms: f64,
    /// `--duration`, and the time from listening to the report.
    pub duration_s: f64,
    pub elapsed_s: f64,
    /// `"duration"`, or `"expect"` when `--expect` distinct messages arrived first.
    pub stopped_by: &'static str,
    pub expect: Option<u64>,
    pub connections: u64,
    /// Every request read (answered or not), and their bytes (head and body).
    pub requests: u64,
    pub bytes: u64,
    /// Distinct `X-InsForge-Message-ID` values.
    pub distinct_messages: u64,
    /// Requests for a message already seen (retries, redeliveries).
    pub repeats: u64,
    pub no_message_id: u64,
    /// First arrivals whose payload carried no send timestamp (not this harness's messages).
    pub no_ts: u64,
    /// Requests refused as malformed (answered 4xx/5xx and closed).
    pub bad_requests: u64,
    /// From the first request to the last.
    pub active_s: f64,
    /// `requests` and `distinct_messages` over `active_s`.
    pub requests_per_sec: f64,
    pub messages_per_sec: f64,
    /// Publish (the payload's `ts`) to each message's first arrival here.
    pub latency_ms: Pct,
    /// The sink's own CPU % over `active_s` (100 = one core) and its RSS.
    pub client_cpu_pct: f64,
    pub client_rss_bytes: u64,
    pub first_error: Option<String>,
    pub warnings: Vec<String>,
}

impl Outcome for SinkReport {
    fn ok(&self) -> bool {
        self.ok
    }

    fn print_table(&self) {
        let mut out = String::new();
        let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<17}{v}\n"));
        row(
            "requests",
            format!(
                "{} ({:.0}/s over {:.2} s first to last), {}",
                self.requests,
                self.requests_per_sec,
                self.active_s,
                mib(self.bytes)
            ),
        );
        let expect = self
            .expect
            .map(|n| format!(" of {n} expected"))
            .unwrap_or_default();
        row(
            "messages",
            format!(
                "{} distinct{expect} ({:.0}/s), repeats {}, no id {}, bad requests {}",
                self.distinct_messages,
                self.messages_per_sec,
                self.repeats,
                self.no_message_id,
                self.bad_requests
            ),
        );
        let no_ts = if self.no_ts > 0 {
            format!("  ({} without a send ts)", self.no_ts)
        } else {
            String::new()
        };
        row("latency ms", format!("{}{no_ts}", self.latency_ms.line()));
        row("connections", self.connections.to_string());
        row(
            "sink",
            format!(
                "CPU {:.1} % over the active window, RSS {}",
                self.client_cpu_pct,
                mib(self.client_rss_bytes)
            ),
        );
        if let Some(e) = &self.first_error {
            row("first error", e.clone());
        }
        for w in &self.warnings {
            row("warning", w.clone());
        }
        row("result", if self.ok { "OK" } else { "FAIL" }.into());
        println!(
            "ringcast-loadtest {}: {:.1} s, listen {}, reply {} after {} ms, stopped by {}",
            self.mode, self.elapsed_s, self.listen, self.reply, self.delay_ms, self.stopped_by
        );
        print!("{out}");
    }

    fn print_json(&self) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string(self)?);
        Ok(())
    }
}

impl ProtoReport {
    /// Its rows in the table: the whole split when the run has more than one protocol
    /// (`split`), else only what the totals do not show (Socket.IO's own counters).
    fn rows(&self, split: bool, row: &mut impl FnMut(&str, String)) {
        let p = self.protocol;
        if split {
            row(
                p,
                format!(
                    "{} subs ({} connected, {} dropped), {} of {} expected ({:.0}/s)",
                    self.subs,
                    self.connected,
                    self.disconnects,
                    self.delivered,
                    self.expected,
                    self.deliveries_per_sec
                ),
            );
            row(
                "  lost/dup/reord",
                format!(
                    "{} / {} / {}  (beyond last ack {}, unparsed {}, order check {})",
                    self.lost,
                    self.duplicated,
                    self.reordered,
                    self.beyond_acked,
                    self.unparsed,
                    self.order_check
                ),
            );
            row("  latency ms", self.latency_ms.line());
        }
        if let (Some(pings), Some(timeouts)) = (self.pings, self.ping_timeouts) {
            row(
                if split { "  socket.io" } else { "socket.io" },
                format!(
                    "{pings} pings answered, {timeouts} ping timeouts, {} presence events, {} \
                     misrouted",
                    self.presence_events.unwrap_or(0),
                    self.misrouted.unwrap_or(0)
                ),
            );
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

impl Report {
    pub fn print_table(&self) {
        let mut out = String::new();
        let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<17}{v}\n"));
        row(
            "target",
            format!("{} ({} thread(s))", self.urls.join(" "), self.threads),
        );
        row(
            "connections",
            format!(
                "{} ok, {} failed{}, disconnects {}",
                self.connected,
                self.connect_failures,
                self.connects_per_sec
                    .map(|r| format!(", {r:.0} conn/s"))
                    .unwrap_or_default(),
                self.disconnects
            ),
        );
        row("connect ms", self.connect_ms.line());
        if self.publishers > 0 {
            row(
                "published",
                format!(
                    "{} sent, {} acked ({:.0}/s), {} rate-limited, {} errors",
                    self.published,
                    self.acked,
                    self.publishes_per_sec,
                    self.rate_limited,
                    self.publish_errors
                ),
            );
            row("ack ms", self.ack_ms.line());
        }
        if !self.webhook_urls.is_empty() {
            row("webhooks", self.webhook_urls.join(" "));
        }
        if self.subs > 0 {
            row(
                "delivered",
                format!(
                    "{} of {} expected ({:.0}/s)",
                    self.delivered, self.expected, self.deliveries_per_sec
                ),
            );
            row(
                "lost/dup/reord",
                format!(
                    "{} / {} / {}  (beyond last ack {}, unparsed {})",
                    self.lost, self.duplicated, self.reordered, self.beyond_acked, self.unparsed
                ),
            );
            if let Some(o) = self.order_check {
                row("order check", o.to_string());
            }
            row("latency ms", self.latency_ms.line());
            let split = self.by_protocol.len() > 1;
            for p in &self.by_protocol {
                p.rows(split, &mut row);
            }
        }
        if let Some(cpu) = self.server_cpu_pct {
            let per = self
                .server_cpu_us_per_msg
                .map(|u| format!(" ({u:.2} µs CPU per message)"))
                .unwrap_or_default();
            let sys = self.server_cpu_sys_pct.unwrap_or(0.0);
            row("broker CPU", format!("{cpu:.1} % ({sys:.1} % kernel){per}"));
        }
        if let Some(rss) = self.server_rss_bytes {
            let mut v = mib(rss);
            if let Some(b) = self.server_rss_before_bytes {
                v.push_str(&format!(" (before {})", mib(b)));
            }
            if let Some(p) = self.server_rss_peak_bytes {
                v.push_str(&format!(" (peak sampled {})", mib(p)));
            }
            if let Some(per) = self.rss_per_conn_bytes {
                v.push_str(&format!(", {per:.0} B per connection"));
            }
            row("broker RSS", v);
        }
        row(
            "harness",
            format!(
                "CPU {:.1} %, RSS {}",
                self.client_cpu_pct,
                mib(self.client_rss_bytes)
            ),
        );
        if let Some(m) = self.machine_cpu_pct {
            row(
                "machine CPU",
                format!(
                    "{m:.1} % of {} % ({} cores); not broker/harness: {:.1} % (softirq, other load)",
                    self.machine_cores * 100,
                    self.machine_cores,
                    self.other_cpu_pct.unwrap_or(0.0)
                ),
            );
        }
        if let Some(e) = &self.first_error {
            row("first error", e.clone());
        }
        for w in &self.warnings {
            row("warning", w.clone());
        }
        row("result", if self.ok { "OK" } else { "FAIL" }.into());
        let what = if self.conns > 0 {
            format!("{} connections", self.conns)
        } else {
            let rate = if self.rate == 0.0 {
                "max".to_string()
            } else {
                format!("{}", self.rate)
            };
            let proto = self.protocol.map(|p| format!(" ({p})")).unwrap_or_default();
            format!(
                "{} subs{proto}, {} publishers @ {rate}/s, {} channel(s), {} B payload",
                self.subs, self.publishers, self.channels, self.size
            )
        };
        println!(
            "ringcast-loadtest {}: {:.1} s, {what}",
            self.mode, self.duration_s
        );
        print!("{out}");
    }

    pub fn print_json(&self) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string(self)?);
        Ok(())
    }
}
