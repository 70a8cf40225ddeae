//! The per-core subscription index: insert, remove and lookup of members, with 10,000
//! members spread over 1,000 channels already present.

use std::{hint::black_box, rc::Rc};

use criterion::{Criterion, criterion_group, criterion_main};
use ringcast::{
    channel::ChannelName,
    control::ConnId,
    core::{
        conn::Conn,
        index::{Member, SubIndex},
    },
};

fn index(c: &mut Criterion) {
    let names: Vec<ChannelName> = (0..1_000)
        .map(|i| ChannelName::parse(&format!("room:{i}")).unwrap())
        .collect();
    let mut idx = SubIndex::default();
    for i in 0..10_000u64 {
        let conn = Rc::new(Conn::new(ConnId(i), 16, 1 << 16));
        idx.entry(&names[(i % 1_000) as usize]).members.insert(
            conn.id,
            Member {
                conn,
                filter: None,
                held: None,
                presence: None,
                sio: false,
            },
        );
    }
    let extra = Rc::new(Conn::new(ConnId(1 << 40), 16, 1 << 16));
    let probe = names[500].clone();
    let mut g = c.benchmark_group("sub_index");
    g.bench_function("insert_remove", |b| {
        b.iter(|| {
            idx.entry(black_box(&probe)).members.insert(
                extra.id,
                Member {
                    conn: extra.clone(),
                    filter: None,
                    held: None,
                    presence: None,
                    sio: false,
                },
            );
            idx.remove(black_box(&probe), extra.id)
        })
    });
    g.bench_function("lookup", |b| {
        b.iter(|| idx.get(black_box(&probe)).map(|e| e.members.len()))
    });
    g.finish();
}

criterion_group!(benches, index);
criterion_main!(benches);
