//! Client message decode and server frame encode: the per-message CPU work on a core and on
//! the control thread. Inputs are built outside `b.iter`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ringcast::{
    frame,
    protocol::{MessageFrame, ServerMsg, parse_client},
};
use serde_json::value::RawValue;

fn payload(size: usize) -> String {
    format!(
        r#"{{"seq":1,"ts":1700000000000000000,"pad":"{}"}}"#,
        "x".repeat(size)
    )
}

fn decode(c: &mut Criterion) {
    let sub = r#"{"type":"subscribe","channel":"order:123","ref":1}"#.to_string();
    let publish = format!(
        r#"{{"type":"publish","channel":"order:123","event":"order.updated","payload":{},"ref":"r1"}}"#,
        payload(50)
    );
    let bad = r#"{"type":"publish","channel":"order:123","bogus":1}"#.to_string();
    let mut g = c.benchmark_group("decode");
    g.bench_function("subscribe", |b| {
        b.iter(|| parse_client(black_box(&sub)).is_ok())
    });
    g.bench_function("publish_100B", |b| {
        b.iter(|| parse_client(black_box(&publish)).is_ok())
    });
    g.bench_function("invalid", |b| {
        b.iter(|| parse_client(black_box(&bad)).is_err())
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let p = RawValue::from_string(payload(50)).unwrap();
    let mut g = c.benchmark_group("encode");
    g.bench_function("message_frame_100B", |b| {
        b.iter(|| {
            frame::encode_json(&MessageFrame {
                kind: "message",
                message_id: black_box("019ad1e4-6f0e-7c3a-9b1e-2f4d5c6b7a80"),
                channel: "order:123",
                event: "order.updated",
                payload: &p,
                sender_id: Some("user-1"),
                sender_type: "user",
                timestamp: "2026-11-29T09:00:00.000Z",
                offset: 42,
            })
        })
    });
    g.bench_function("published_ack", |b| {
        b.iter(|| {
            frame::encode_json(&ServerMsg::Published {
                message_id: black_box("019ad1e4-6f0e-7c3a-9b1e-2f4d5c6b7a80"),
                channel: "order:123",
                event: "order.updated",
                offset: 42,
                r#ref: None,
            })
        })
    });
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
