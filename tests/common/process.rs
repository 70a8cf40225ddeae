//! The real `ringcast` binary as a child process, for tests that SIGKILL a node: it listens on
//! a free loopback port with the test secrets, and is killed when dropped (even when an
//! assertion fails first).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{ADMIN_KEY, SECRET, eventually};

pub struct BrokerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// What runs before the binary (`ip netns exec NAME`), and the extra arguments: kept for
    /// `restart`.
    prefix: Vec<String>,
    args: Vec<String>,
}

impl BrokerProcess {
    /// `ringcast serve` with `args` added; returns once the port accepts connections.
    pub fn start(args: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Self::start_at(&[], addr, args)
    }

    /// Listening on `addr`, run under `prefix` (e.g. `ip netns exec NAME`).
    pub fn start_at(prefix: &[&str], addr: SocketAddr, args: &[&str]) -> Self {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut node = Self {
            child: Self::spawn(&owned(prefix), addr, &owned(args)),
            addr,
            prefix: owned(prefix),
            args: owned(args),
        };
        node.wait_up();
        node
    }

    fn spawn(prefix: &[String], addr: SocketAddr, args: &[String]) -> Child {
        let bin = env!("CARGO_BIN_EXE_ringcast");
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["serve", "--listen", &addr.to_string()])
            .args([
                "--jwt-secret",
                SECRET,
                "--admin-key",
                ADMIN_KEY,
                "--log-level",
                "warn",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn wait_up(&mut self) {
        let addr = self.addr;
        eventually("node up", Duration::from_secs(10), || {
            TcpStream::connect(addr).is_ok()
        });
    }

    /// SIGKILL: no graceful close, nothing flushed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same node again (same address and arguments) after `kill`.
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.prefix, self.addr, &self.args);
        self.wait_up();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
