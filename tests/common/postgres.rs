//! A real PostgreSQL for tests (Debian's `postgresql` package, installed by `scripts/test`): a
//! throwaway cluster per test (initdb in a temp dir, a free loopback port, `wal_level =
//! logical`), with a role `ringcast` that may replicate and a database `app` it owns. Stopped
//! (immediate) and removed on drop.

use std::{
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

pub struct PgServer {
    pub port: u16,
    root: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

/// The newest installed PostgreSQL's binaries.
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/test, or apt-get install postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().expect("no PostgreSQL server binaries found")
}

impl PgServer {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// A cluster with extra `postgresql.conf` lines (later lines win).
    pub fn start_with(extra_conf: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let root = std::env::temp_dir().join(format!("ringcast-pg-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        // The server refuses to run as root: run it as `postgres` then.
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let s = Self {
            port,
            root,
            bin: bin_dir(),
            as_postgres,
        };
        if as_postgres {
            let _ = Command::new("useradd")
                .args([
                    "--system",
                    "--home-dir",
                    "/var/lib/postgresql",
                    "--shell",
                    "/bin/bash",
                    "postgres",
                ])
                .output();
            must(
                Command::new("chown")
                    .args(["-R", "postgres", s.root.to_str().unwrap()])
                    .output(),
            );
        }
        let data = s.root.join("data");
        let pw = s.root.join("pw");
        std::fs::write(&pw, "postgres\n").unwrap();
        if as_postgres {
            must(
                Command::new("chown")
                    .args(["postgres", pw.to_str().unwrap()])
                    .output(),
            );
        }
        // Loopback logins use SCRAM, as a real deployment would; psql uses the socket.
        must(
            s.cmd("initdb")
                .args([
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pw.display()))
                .output(),
        );
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             wal_level = logical\nmax_wal_senders = 10\nmax_replication_slots = 10\n\
             fsync = off\nfull_page_writes = off\n\
             shared_buffers = 32MB\nmax_slot_wal_keep_size = 1GB\n{extra_conf}\n",
            s.root.display()
        );
        let path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&conf);
        std::fs::write(&path, text).unwrap();
        s.pg_ctl(&["start", "-w", "-t", "60"]);
        s.psql_db(
            "postgres",
            "CREATE ROLE ringcast LOGIN REPLICATION PASSWORD 'ringcast'; \
             CREATE ROLE plain LOGIN PASSWORD 'plain';",
        );
        s.psql_db("postgres", "CREATE DATABASE app OWNER ringcast");
        s
    }

    fn cmd(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.root.join("data");
        let log = self.root.join("server.log");
        must(
            self.cmd("pg_ctl")
                .args(["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap()])
                .args(args)
                .output(),
        );
    }

    /// `postgres://ringcast:ringcast@127.0.0.1:<port>/app`.
    pub fn url(&self) -> String {
        self.url_as("ringcast", "ringcast")
    }

    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/app", self.port)
    }

    /// Runs SQL in `app` as its owner `ringcast` (so the tables it creates are ringcast's,
    /// as an application's would be); returns the unaligned output (one row a line).
    pub fn psql(&self, sql: &str) -> String {
        self.run_psql("ringcast", "app", sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    /// Runs SQL in `db` as the superuser.
    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        self.run_psql("postgres", db, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    /// Like `psql`, returning the error instead of panicking (the server may be restarting).
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        self.run_psql("ringcast", db, sql)
    }

    fn run_psql(&self, user: &str, db: &str, sql: &str) -> Result<String, String> {
        let o = self
            .cmd("psql")
            .args([
                "-h",
                self.root.to_str().unwrap(),
                "-p",
                &self.port.to_string(),
            ])
            .args([
                "-U",
                user,
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-A",
                "-t",
                "-q",
            ])
            .args(["-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).to_string())
        }
    }

    /// `pg_ctl restart -m fast`: clients are disconnected, then the server comes back.
    pub fn restart_fast(&self) {
        self.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60"]);
    }

    /// A crash (`stop -m immediate`: no checkpoint, slot state as of the last one), then a
    /// start (crash recovery).
    pub fn crash_and_start(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        self.pg_ctl(&["start", "-w", "-t", "60"]);
    }

    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    /// Waits until `psql` answers (after a restart).
    pub fn wait_ready(&self) {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if self.try_psql("app", "SELECT 1").is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("PostgreSQL did not come back");
    }
}

fn must(o: std::io::Result<Output>) {
    let o = o.expect("could not run a PostgreSQL tool");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.root.join("data");
        let _ = self
            .cmd("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "stop",
                "-m",
                "immediate",
                "-w",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
