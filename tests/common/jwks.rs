#![allow(dead_code)]
//! A real HTTP/1.1 server for a JWKS document, on a loopback port: std sockets, one thread,
//! `Connection: close`. The test swaps the document (`serve`) to rotate keys and reads how many
//! times it was fetched. Stops (and frees the port) on drop.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

struct Shared {
    doc: Mutex<String>,
    fetches: AtomicUsize,
    stopping: AtomicBool,
}

pub struct JwksServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl JwksServer {
    /// Serves `doc` (a JWKS JSON document) at every path.
    pub fn start(doc: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            doc: Mutex::new(doc),
            fetches: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopping.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(c) = conn {
                    answer(c, &s);
                }
            }
        });
        Self {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Serves `doc` from the next request on.
    pub fn serve(&self, doc: String) {
        *self.shared.doc.lock().unwrap_or_else(|e| e.into_inner()) = doc;
    }

    /// Requests answered so far.
    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }
}

fn answer(mut c: TcpStream, s: &Shared) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let doc = s.doc.lock().unwrap_or_else(|e| e.into_inner()).clone();
    s.fetches.fetch_add(1, Ordering::SeqCst);
    let _ = write!(
        c,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{doc}",
        doc.len()
    );
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
