//! The fuzz targets' bodies (`fuzz/src/lib.rs`) run over their seed corpora (`fuzz/seeds/`)
//! and over every crash input kept in `fuzz/regressions/`, on stable Rust and without a
//! fuzzer: what the fuzzers found stays fixed. `cargo fuzz` itself runs in `scripts/fuzz`.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod bodies;

use std::path::Path;

fn run(target: &str, body: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [
        root.join("seeds").join(target),
        root.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.expect("readable corpus dir").path();
            let data = std::fs::read(&path).expect("readable corpus file");
            let r = std::panic::catch_unwind(|| body(&data));
            assert!(r.is_ok(), "{target}: {} panicked", path.display());
            n += 1;
        }
    }
    assert!(n >= 5, "{target}: only {n} seeds in fuzz/seeds/{target}");
}

#[test]
fn ws_frame() {
    run("ws_frame", bodies::ws_frame);
}

#[test]
fn client_msg() {
    run("client_msg", bodies::client_msg);
}

#[test]
fn http_request() {
    run("http_request", bodies::http_request);
}

#[test]
fn jwt() {
    run("jwt", bodies::jwt);
}

#[test]
fn channel_pattern() {
    run("channel_pattern", bodies::channel_pattern);
}

#[test]
fn config() {
    run("config", bodies::config);
}

#[test]
fn socketio() {
    run("socketio", bodies::socketio);
}

#[test]
fn pgoutput() {
    run("pgoutput", bodies::pgoutput);
}

#[test]
fn policy() {
    run("policy", bodies::policy);
}
