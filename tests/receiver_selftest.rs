//! Self-test of the webhook receiver harness (`common::receiver`) over real sockets: keep-alive,
//! scripted replies shared across connections, chunked bodies, Hang/Close, stop and restart on
//! the same port, and HTTPS trusted through the written PEM file.

mod common;

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use common::receiver::{Receiver, Reply};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

const T: Duration = Duration::from_secs(5);

fn connect(r: &Receiver) -> TcpStream {
    let s = TcpStream::connect(r.addr()).expect("connect");
    s.set_read_timeout(Some(T)).unwrap();
    s
}

fn post(path: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one bodiless response head; returns its text ("" on EOF).
fn read_head(s: &mut impl Read) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => out.push(b[0]),
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8(out).unwrap()
}

fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn keep_alive_and_script() {
    let r = Receiver::start(
        vec![Reply::Status(503), Reply::Status(200)],
        Reply::Status(204),
    );
    let mut s = connect(&r);
    s.write_all(post("/hook?x=1", r#"{"n":1}"#, "X-Sig: abc\r\n").as_bytes())
        .unwrap();
    let h1 = read_head(&mut s);
    assert!(h1.starts_with("HTTP/1.1 503 "), "{h1}");
    assert!(h1.contains("Content-Length: 0\r\n"), "{h1}");
    s.write_all(post("/hook", r#"{"n":2}"#, "").as_bytes())
        .unwrap();
    assert_eq!(status(&read_head(&mut s)), 200);

    // The script counter is shared: a second connection gets the default.
    let mut s2 = connect(&r);
    s2.write_all(post("/other", "{}", "").as_bytes()).unwrap();
    assert_eq!(status(&read_head(&mut s2)), 204);

    let reqs = r.wait_for(3, T);
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/hook?x=1");
    assert_eq!(reqs[0].header("x-sig"), Some("abc"));
    assert_eq!(reqs[0].header("X-SIG"), Some("abc"));
    assert_eq!(reqs[0].json()["n"], 1);
    assert_eq!(reqs[1].json()["n"], 2);
    assert_eq!(reqs[2].path, "/other");
    assert!(reqs[0].at <= reqs[1].at);
    assert_eq!(
        r.url("/h"),
        format!("http://127.0.0.1:{}/h", r.addr().port())
    );
}

#[test]
fn headers_and_chunked_bodies() {
    let r = Receiver::start(
        vec![Reply::StatusWithHeaders(
            429,
            vec![("Retry-After".into(), "7".into())],
        )],
        Reply::Status(200),
    );
    let mut s = connect(&r);
    s.write_all(post("/a", "{}", "").as_bytes()).unwrap();
    let h = read_head(&mut s);
    assert!(h.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{h}");
    assert!(h.contains("Retry-After: 7\r\n"), "{h}");

    // Chunked, split across writes, with an extension and a trailer.
    s.write_all(
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"a\"",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    s.write_all(b"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n")
        .unwrap();
    assert_eq!(status(&read_head(&mut s)), 200);
    let reqs = r.wait_for(2, T);
    assert_eq!(reqs[1].json()["a"], 1);
}

#[test]
fn hang_close_and_stop() {
    let mut r = Receiver::start(vec![Reply::Hang, Reply::Close], Reply::Status(200));
    let mut hung = connect(&r);
    hung.write_all(post("/hang", "{}", "").as_bytes()).unwrap();
    r.wait_for(1, T);
    hung.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut b = [0u8; 1];
    let e = hung
        .read(&mut b)
        .expect_err("a hanging reply sends nothing");
    assert!(matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));

    let mut closed = connect(&r);
    closed
        .write_all(post("/close", "{}", "").as_bytes())
        .unwrap();
    assert_eq!(read_head(&mut closed), "", "Close answers nothing");
    assert_eq!(r.wait_for(2, T)[1].path, "/close");

    // Stop closes the hanging connection and frees the port.
    let addr = r.addr();
    let t0 = Instant::now();
    r.stop();
    r.stop();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    hung.set_read_timeout(Some(T)).unwrap();
    assert!(matches!(hung.read(&mut b), Ok(0) | Err(_)));
    assert!(
        TcpStream::connect(addr).is_err(),
        "nobody listens after stop"
    );

    // Back on the same port.
    let r2 = Receiver::start_on(addr, vec![], Reply::Status(202));
    assert_eq!(r2.addr(), addr);
    let mut s = connect(&r2);
    s.write_all(post("/again", "{}", "Connection: close\r\n").as_bytes())
        .unwrap();
    let h = read_head(&mut s);
    assert_eq!(status(&h), 202, "{h}");
    assert_eq!(read_head(&mut s), "", "Connection: close is honoured");
    assert_eq!(r2.requests().len(), 1);
}

#[test]
#[should_panic(expected = "1 of 2 requests")]
fn wait_for_reports_the_count() {
    let r = Receiver::start(vec![], Reply::Status(200));
    let mut s = connect(&r);
    s.write_all(post("/one", "{}", "").as_bytes()).unwrap();
    read_head(&mut s);
    r.wait_for(2, Duration::from_millis(200));
}

#[test]
fn https_with_the_written_pem() {
    let (r, pem) = Receiver::https(vec![Reply::Status(500)], Reply::Status(200));
    assert_eq!(
        r.url("/h"),
        format!("https://localhost:{}/h", r.addr().port())
    );
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pem).expect("PEM"))
        .unwrap();
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    for (name, want) in [("localhost", 500), ("127.0.0.1", 200)] {
        let conn = rustls::ClientConnection::new(
            config.clone(),
            ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, connect(&r));
        tls.write_all(post("/secure", r#"{"tls":true}"#, "").as_bytes())
            .unwrap();
        tls.flush().unwrap();
        assert_eq!(status(&read_head(&mut tls)), want, "{name}");
        let _ = tls.sock.shutdown(Shutdown::Both);
    }
    let reqs = r.wait_for(2, T);
    assert_eq!(reqs[0].json()["tls"], true);
    drop(r);
    assert!(!pem.exists(), "the PEM file is removed on drop");
}
