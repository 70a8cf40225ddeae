//! A real `redis-server` for tests: started on a free loopback port, stopped on drop.
//! `scripts/test` installs redis-server from Debian's packages when it is missing.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct RedisServer {
    pub port: u16,
    pub(crate) child: Option<Child>,
    /// With a data directory: append-only file, fsync on every write (survives restarts).
    dir: Option<std::path::PathBuf>,
    /// An address to listen on besides 127.0.0.1 (a veth of a test network namespace).
    pub also_bind: Option<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = Self {
            port,
            child: None,
            dir: None,
            also_bind: None,
        };
        s.restart();
        s
    }

    /// A server whose data survives `stop` + `restart` (AOF, `appendfsync always`).
    pub fn start_persistent() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("ringcast-redis-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Self {
            port,
            child: None,
            dir: Some(dir),
            also_bind: None,
        };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port.
    pub fn restart(&mut self) {
        let port = self.port.to_string();
        let bind = match &self.also_bind {
            Some(a) => format!("127.0.0.1 {a}"),
            None => "127.0.0.1".to_string(),
        };
        let mut args = vec!["--port", &port, "--bind", &bind, "--save", ""];
        if self.also_bind.is_some() {
            // Clients from another network namespace are not loopback clients.
            args.extend(["--protected-mode", "no"]);
        }
        let dir = self.dir.as_ref().map(|d| d.display().to_string());
        match &dir {
            Some(d) => args.extend(["--appendonly", "yes", "--appendfsync", "always", "--dir", d]),
            None => args.extend(["--appendonly", "no"]),
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: run scripts/test, or apt-get install redis-server");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// `SHUTDOWN`: Redis closes its clients, writes its AOF and exits; waits for the exit.
    pub fn shutdown(&mut self) {
        let _ = self.command(&["SHUTDOWN"]);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): the connections stay open, nothing answers.
    pub fn pause(&self, paused: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let sig = if paused { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends one command (RESP), returns the raw reply.
    pub fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    }

    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A Redis Cluster of three masters on loopback, made with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = cluster_port();
            let dir = std::env::temp_dir()
                .join(format!("ringcast-cluster-{port}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--dir",
                    &dir.display().to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "redis-server not found: run scripts/test, or apt-get install redis-server",
                );
            let s = RedisServer {
                port,
                child: Some(child),
                dir: Some(dir),
                also_bind: None,
            };
            let end = Instant::now() + Duration::from_secs(10);
            while !s.ping() {
                assert!(Instant::now() < end, "cluster node {port} did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            nodes.push(s);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli not found: apt-get install redis-tools");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let end = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            while !n.command(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < end, "cluster did not become ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self { nodes }
    }

    pub fn url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port)
    }
}

/// A port in 20000..30000 whose cluster-bus port (+10000) is free too: ephemeral ports can be
/// above 55535, where the bus port would not exist.
fn cluster_port() -> u16 {
    use std::net::TcpListener;
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let seed = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for _ in 0..1000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 20_000 + ((x >> 33) % 10_000) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}
