//! Channel resolution against 10,000 patterns (exact names and wildcards), as every subscribe
//! and publish does on its core. Inputs are built outside `b.iter`.

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use ringcast::{
    channel::{ChannelPattern, ChannelRecord, ChannelTable},
    timestamp::Timestamp,
};

fn rec(p: &str) -> Arc<ChannelRecord> {
    Arc::new(ChannelRecord {
        id: uuid::Uuid::new_v4(),
        pattern: ChannelPattern::parse(p).unwrap(),
        description: None,
        webhook_urls: None,
        enabled: true,
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
    })
}

fn resolve(c: &mut Criterion) {
    // 5,000 exact names and 5,000 wildcard patterns over 500 tenants.
    let mut records = Vec::new();
    for i in 0..5_000 {
        records.push(rec(&format!("tenant{}:room:{i}", i % 500)));
        records.push(rec(&format!("tenant{}:feed{i}:*", i % 500)));
    }
    records.push(rec("public:*"));
    let table = ChannelTable::build(1, records);
    let mut g = c.benchmark_group("resolve_10k");
    g.bench_function("exact", |b| {
        b.iter(|| table.resolve(black_box("tenant7:room:4007")).is_some())
    });
    g.bench_function("wildcard_hit", |b| {
        b.iter(|| table.resolve(black_box("tenant7:feed4007:x")).is_some())
    });
    g.bench_function("wildcard_fallback", |b| {
        b.iter(|| table.resolve(black_box("public:lobby")).is_some())
    });
    g.bench_function("miss", |b| {
        b.iter(|| table.resolve(black_box("nobody:here")).is_none())
    });
    g.finish();
}

criterion_group!(benches, resolve);
criterion_main!(benches);
