//! CPU time and RSS of a process from /proc/PID/stat and /proc/PID/status (the broker with
//! `--server-pid`, and this process itself): CPU % over a window and resident bytes.

use std::time::Instant;

use anyhow::Context;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    /// stime alone (kernel time: syscalls, and on loopback the peer's TCP receive work).
    pub sys_ticks: u64,
    pub rss_bytes: u64,
}

/// Reads `/proc/{pid}` (`pid` = "self" for this process).
#[derive(Debug, Clone)]
pub struct Proc {
    pid: String,
    hz: f64,
}

impl Proc {
    pub fn new(pid: &str) -> anyhow::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let p = Self {
            pid: pid.to_string(),
            hz: if hz > 0 { hz as f64 } else { 100.0 },
        };
        p.sample()
            .with_context(|| format!("reading /proc/{pid} (is the pid right?)"))?;
        Ok(p)
    }

    pub fn sample(&self) -> anyhow::Result<Sample> {
        let at = Instant::now();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the parenthesised command name (which may contain spaces).
        let after = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("malformed /proc/PID/stat")?;
        let f: Vec<&str> = after.split_whitespace().collect();
        // after ')' : state(3) ppid(4) ... utime(14) stime(15) => indices 11, 12 here.
        let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).context("utime")?;
        let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).context("stime")?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Sample {
            at,
            ticks: utime + stime,
            sys_ticks: stime,
            rss_bytes: rss_kb * 1024,
        })
    }

    /// CPU % (100 = one core busy) between two samples.
    pub fn cpu_pct(&self, a: &Sample, b: &Sample) -> f64 {
        let wall = b.at.duration_since(a.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        b.ticks.saturating_sub(a.ticks) as f64 / self.hz / wall * 100.0
    }

    /// Kernel-time share of `cpu_pct`.
    pub fn sys_pct(&self, a: &Sample, b: &Sample) -> f64 {
        let wall = b.at.duration_since(a.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        b.sys_ticks.saturating_sub(a.sys_ticks) as f64 / self.hz / wall * 100.0
    }

    /// CPU seconds between two samples.
    pub fn cpu_secs(&self, a: &Sample, b: &Sample) -> f64 {
        b.ticks.saturating_sub(a.ticks) as f64 / self.hz
    }
}

/// Machine-wide CPU ticks from /proc/stat: (busy, all), summed over every CPU.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    pub busy: u64,
    pub all: u64,
    pub cores: usize,
}

impl Machine {
    pub fn sample() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let all: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        let cores = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        Some(Self {
            busy: all.saturating_sub(idle),
            all,
            cores: cores.max(1),
        })
    }

    /// Busy % between two samples, 100 = one core (so up to 100 x cores).
    pub fn busy_pct(a: &Self, b: &Self) -> f64 {
        let all = b.all.saturating_sub(a.all);
        if all == 0 {
            return 0.0;
        }
        b.busy.saturating_sub(a.busy) as f64 / all as f64 * 100.0 * b.cores as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_self() {
        let p = Proc::new("self").expect("own /proc");
        let a = p.sample().expect("sample");
        assert!(a.rss_bytes > 0);
        let b = p.sample().expect("sample");
        assert!(p.cpu_pct(&a, &b) >= 0.0);
    }
}
