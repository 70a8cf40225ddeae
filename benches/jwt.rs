//! JWT verification (HS256), done once per `auth` message and per REST request.

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use ringcast::auth::{Verifier, mint};

fn verify(c: &mut Criterion) {
    let v = Verifier::new("bench-secret", Some("admin-key"));
    let good = mint(
        "bench-secret",
        "user-1",
        "authenticated",
        Duration::from_secs(3600),
        None,
    );
    let bad = mint(
        "other-secret",
        "user-1",
        "authenticated",
        Duration::from_secs(3600),
        None,
    );
    let mut g = c.benchmark_group("jwt");
    g.bench_function("verify_ok", |b| {
        b.iter(|| v.verify(black_box(&good)).is_ok())
    });
    g.bench_function("verify_bad_signature", |b| {
        b.iter(|| v.verify(black_box(&bad)).is_err())
    });
    g.bench_function("admin_key", |b| {
        b.iter(|| v.verify(black_box("admin-key")).is_ok())
    });
    g.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
