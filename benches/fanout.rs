//! Fan-out of one published message to 1 / 100 / 10,000 local subscribers on a core: the real
//! `Core::deliver` (index lookup, filter check, the same `Rc`-shared frame queued to every outbox), then every
//! outbox drained the way the writer tasks drain them, before the timer stops. Sockets are
//! left out: their cost is measured end to end by `ringcast-loadtest`.

use std::{hint::black_box, rc::Rc, sync::Arc};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringcast::{
    channel::{ChannelName, ChannelPattern, ChannelRecord, ChannelTable},
    config::Config,
    control::{ControlMsg, Delivery},
    core::{Core, NodeShared, conn::Conn},
    metrics::Metrics,
    timestamp::Timestamp,
};

/// A core with `n` connections subscribed to `bench:1`, and a stand-in control thread that
/// confirms interest (as the real one does) while subscribing.
fn setup(
    rt: &mut monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>,
    n: usize,
) -> (Rc<Core>, Vec<Rc<Conn>>) {
    rt.block_on(async move {
        let shared = Arc::new(NodeShared {
            config: Config::defaults(),
            metrics: Metrics::new(1),
            engine_name: "bench",
            sequencing: ringcast::engine::Sequencing::Engine,
            node_id: "bench".into(),
            epoch: "bench".into(),
            jwks: None,
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        monoio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if let ControlMsg::Interest(i) = m
                    && let Some(d) = i.done
                {
                    let _ = d.send(ringcast::engine::ChannelPos {
                        offset: 0,
                        epoch: "bench".into(),
                    });
                }
            }
        });
        let record = Arc::new(ChannelRecord {
            id: uuid::Uuid::new_v4(),
            pattern: ChannelPattern::parse("bench:*").unwrap(),
            description: None,
            webhook_urls: None,
            enabled: true,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
        });
        let table = Arc::new(ChannelTable::build(1, [record]));
        let (peer, _inbox) = tokio::sync::mpsc::channel(1);
        let policies = shared.config.policies.0.clone();
        let core = Rc::new(Core::new(0, shared, table, policies, tx, vec![peer]));
        let ch = ChannelName::parse("bench:1").unwrap();
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let c = core.register();
            core.subscribe(&c, &ch, None, None, false)
                .await
                .expect("subscribe");
            conns.push(c);
        }
        (core, conns)
    })
}

fn fanout(c: &mut Criterion) {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    let frame = ringcast::frame::encode(
        tungstenite::protocol::frame::coding::OpCode::Data(
            tungstenite::protocol::frame::coding::Data::Text,
        ),
        &[b'x'; 100],
    );
    let mut g = c.benchmark_group("fanout");
    for n in [1usize, 100, 10_000] {
        let (core, conns) = setup(&mut rt, n);
        let d = Delivery {
            offset: 1,
            channel: ChannelName::parse("bench:1").unwrap(),
            event: Arc::from("e"),
            schema: None,
            frame: frame.clone(),
            sio: None,
        };
        let mut sink: Vec<ringcast::core::out_frame::OutFrame> = Vec::with_capacity(4);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let queued = core.deliver(black_box(&d));
                for conn in &conns {
                    sink.clear();
                    conn.outbox.drain_into(&mut sink, usize::MAX);
                }
                queued
            })
        });
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
