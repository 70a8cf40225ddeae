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
        let child = Command::new(env!("CARGO_BIN_EXE_ringcast"))
            .args(["serve", "--listen", &addr.to_string()])
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
            .unwrap();
        let node = Self { child, addr };
        eventually("node up", Duration::from_secs(10), || {
            TcpStream::connect(addr).is_ok()
        });
        node
    }

    /// SIGKILL: no graceful close, nothing flushed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
