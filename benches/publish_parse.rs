//! JSON parsing on the publish paths: serde_json (what ringcast uses, `payload` kept as a
//! borrowed `&RawValue` and passed through byte for byte) against simd-json.
//!
//! Inputs: a WebSocket `publish` frame and an HTTP batch body, with payloads of 100 B, 4 KiB,
//! 64 KiB and 256 KiB (`str_*`: a few fields and one long string) and 4 KiB and 64 KiB
//! (`mixed_*`: many small objects with numbers, strings and nested arrays). The first three
//! cases end with the message's fields checked and the payload bytes for subscribers in a
//! reused output buffer:
//!
//! - `serde_json`: `ringcast::protocol::parse_client(&str)` (for the batch, a borrowed
//!   `#[derive(Deserialize)]` struct from `serde_json::from_slice`), then the raw payload
//!   slice copied out. No UTF-8 check on the WebSocket path: the frame decoder did it.
//! - `simd_reserialize`: what adopting simd-json takes. Copy the input into a reused padded
//!   buffer (simd-json unescapes strings in place), `fill_tape_padded`, a serde derive with
//!   the payload as `BorrowedValue`, then the payload serialized again (`Writable::write`).
//!   simd-json has no raw-value type, so this is its documented way to get payload bytes.
//! - `simd_span`: the same parse with the payload skipped (`IgnoredAny`); its byte span is
//!   then found by walking `Buffers::structural_indexes()` (stage-1 offsets, public in
//!   simd-json 0.19; the tape itself carries no offsets) over the original input, so the
//!   payload is passed through byte for byte. Hand-written: keys written with escapes
//!   (`"p\u0061yload"`) are not recognised.
//! - `simd_tape`: lower bound, the copy plus `fill_tape_padded` only (no field checks, no
//!   payload output).
//! - `memcpy`: the input copy alone, which every `simd_*` case includes.
//!
//! simd-json validates UTF-8 in its first stage and cannot skip it; serde_json on `&str` does
//! not validate. Throughput is input bytes per second. Correctness checks run once before
//! the timings, outside them.

use std::{borrow::Cow, hint::black_box, ops::Range};

use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use ringcast::{
    channel::ChannelName,
    protocol::{ClientMsg, parse_client},
};
use serde::{Deserialize, de::IgnoredAny};
use serde_json::value::RawValue;
use simd_json::{
    BorrowedValue, Buffers, Deserializer, INPUT_PADDING, Tape, fill_tape_padded, prelude::Writable,
};

/// `MAX_EVENT_LEN` of `ringcast::protocol` (not exported).
const MAX_EVENT_LEN: usize = 255;

const TEXT: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
                    tempor incididunt ut labore et dolore magna aliqua. ";

/// A payload of exactly `size` bytes: a few fields and one long ASCII string.
fn str_payload(size: usize, seq: usize) -> String {
    let head = format!(r#"{{"seq":{seq},"ts":1700000000000000000,"kind":"order","note":""#);
    let fill = size - head.len() - 2;
    let text: String = TEXT.chars().cycle().take(fill).collect();
    format!(r#"{head}{text}"}}"#)
}

/// A payload of at most `size` bytes: an array of small objects with numbers, short strings,
/// booleans and nested arrays.
fn mixed_payload(size: usize) -> String {
    let mut out = String::from(r#"{"seq":1,"items":["#);
    for i in 0.. {
        let item = format!(
            r#"{}{{"id":{i},"sku":"A-{i:04}","qty":{},"price":{}.{:02},"ok":{},"tags":["new","sale"],"dims":[{},{},{}]}}"#,
            if i == 0 { "" } else { "," },
            i % 7,
            10 + i % 90,
            i % 100,
            i % 2 == 0,
            i % 5,
            i % 11,
            i % 13,
        );
        if out.len() + item.len() + 2 > size {
            break;
        }
        out.push_str(&item);
    }
    out.push_str("]}");
    out
}

fn publish_frame(payload: &str) -> String {
    format!(
        r#"{{"type":"publish","channel":"order:123","event":"order.updated","payload":{payload},"ref":"r1"}}"#
    )
}

fn batch_body(n: usize, payload_size: usize) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"channel":"c:1","event":"e","payload":{},"idempotencyKey":"k-{i}"}}"#,
                str_payload(payload_size, i)
            )
        })
        .collect();
    format!(r#"{{"messages":[{}]}}"#, items.join(","))
}

// ---- the HTTP batch body, serde_json (as the server would define it) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    #[serde(borrow)]
    messages: Vec<Item<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a RawValue,
    #[serde(rename = "idempotencyKey", borrow)]
    idempotency_key: Option<Cow<'a, str>>,
}

// ---- simd-json: the same shapes, payload as a value or skipped ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimdPublish<'a, P, R> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    payload: P,
    #[serde(rename = "ref")]
    r#ref: Option<R>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimdBatch<'a, P> {
    #[serde(borrow)]
    messages: Vec<SimdItem<'a, P>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimdItem<'a, P> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    payload: P,
    #[serde(rename = "idempotencyKey", borrow)]
    idempotency_key: Option<Cow<'a, str>>,
}

/// The checks `parse_client` makes on a publish beyond the JSON shape.
fn check_publish<P>(m: &SimdPublish<'_, P, BorrowedValue<'_>>) -> ChannelName {
    assert!(m.kind == "publish");
    assert!(!m.event.is_empty() && m.event.len() <= MAX_EVENT_LEN);
    assert!(matches!(
        m.r#ref,
        None | Some(BorrowedValue::String(_)) | Some(BorrowedValue::Static(_))
    ));
    ChannelName::parse(&m.channel).expect("valid channel")
}

/// Byte ranges in `src` of every value under the key `"payload"` in objects at nesting depth
/// `depth` (the root object is depth 1), from simd-json's stage-1 structural indexes.
fn payload_spans(src: &[u8], idx: &[u32], depth: u32, out: &mut Vec<Range<usize>>) {
    out.clear();
    let at = |k: usize| src[idx[k] as usize];
    let mut d = 0u32;
    let mut i = 0;
    while i < idx.len() && (idx[i] as usize) < src.len() {
        match at(i) {
            b'{' | b'[' => d += 1,
            b'}' | b']' => d -= 1,
            b'"' if d == depth && i + 2 < idx.len() && at(i + 1) == b':' => {
                let key = src[idx[i] as usize..idx[i + 1] as usize].trim_ascii_end();
                if key == b"\"payload\"" {
                    let start = idx[i + 2] as usize;
                    let mut j = i + 2;
                    let mut vd = 0u32;
                    loop {
                        match at(j) {
                            b'{' | b'[' => vd += 1,
                            b'}' | b']' if vd == 0 => break,
                            b'}' | b']' => vd -= 1,
                            b',' if vd == 0 => break,
                            _ => {}
                        }
                        j += 1;
                    }
                    let end = start + src[start..idx[j] as usize].trim_ascii_end().len();
                    out.push(start..end);
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// Reused simd-json state: padded input copy, stage buffers, tape, spans, output.
struct Simd {
    buf: Vec<u8>,
    buffers: Buffers,
    tape: Tape<'static>,
    spans: Vec<Range<usize>>,
    out: Vec<u8>,
}

impl Simd {
    fn new(len: usize) -> Self {
        Self {
            buf: vec![b' '; len + INPUT_PADDING],
            buffers: Buffers::new(len),
            tape: Tape(Vec::new()),
            spans: Vec::new(),
            out: Vec::new(),
        }
    }
}

/// Copies `src` into `s.buf` and parses it into a tape that reuses `s.tape`'s allocation.
macro_rules! simd_tape {
    ($s:ident, $src:expr) => {{
        let src: &[u8] = $src;
        let n = src.len();
        $s.buf[..n].copy_from_slice(src);
        let mut tape = std::mem::replace(&mut $s.tape, Tape(Vec::new())).reset();
        fill_tape_padded(&mut $s.buf, n, &mut $s.buffers, &mut tape).expect("valid JSON");
        tape
    }};
}

// ---- one function per case; each returns the payload bytes' length ----

fn ws_serde_json(src: &str, out: &mut Vec<u8>) -> usize {
    let m = parse_client(src).expect("publish");
    let ClientMsg::Publish { payload, .. } = m.msg else {
        panic!("not a publish")
    };
    out.clear();
    out.extend_from_slice(payload.get().as_bytes());
    out.len()
}

fn ws_simd_reserialize(s: &mut Simd, src: &str) -> usize {
    let tape = simd_tape!(s, src.as_bytes());
    let mut de = Deserializer::from_tape(tape);
    let m =
        SimdPublish::<BorrowedValue<'_>, BorrowedValue<'_>>::deserialize(&mut de).expect("publish");
    black_box(check_publish(&m));
    s.out.clear();
    m.payload.write(&mut s.out).expect("write to a Vec");
    drop(m);
    s.tape = de.into_tape().reset();
    s.out.len()
}

fn ws_simd_span(s: &mut Simd, src: &str) -> usize {
    let tape = simd_tape!(s, src.as_bytes());
    let mut de = Deserializer::from_tape(tape);
    let m = SimdPublish::<IgnoredAny, BorrowedValue<'_>>::deserialize(&mut de).expect("publish");
    black_box(check_publish(&m));
    drop(m);
    s.tape = de.into_tape().reset();
    payload_spans(
        src.as_bytes(),
        s.buffers.structural_indexes(),
        1,
        &mut s.spans,
    );
    let [p] = s.spans.as_slice() else {
        panic!("one payload")
    };
    s.out.clear();
    s.out.extend_from_slice(&src.as_bytes()[p.clone()]);
    s.out.len()
}

fn simd_tape_only(s: &mut Simd, src: &[u8]) -> usize {
    let tape = simd_tape!(s, src);
    let n = tape.0.len();
    s.tape = tape.reset();
    n
}

fn memcpy(s: &mut Simd, src: &[u8]) -> usize {
    s.buf[..src.len()].copy_from_slice(src);
    black_box(&s.buf);
    src.len()
}

fn batch_serde_json(src: &[u8], out: &mut Vec<u8>) -> usize {
    let b: Batch<'_> = serde_json::from_slice(src).expect("batch");
    out.clear();
    for m in &b.messages {
        black_box((&m.channel, &m.event, &m.idempotency_key));
        out.extend_from_slice(m.payload.get().as_bytes());
    }
    out.len()
}

fn batch_simd_reserialize(s: &mut Simd, src: &[u8]) -> usize {
    let tape = simd_tape!(s, src);
    let mut de = Deserializer::from_tape(tape);
    let b = SimdBatch::<BorrowedValue<'_>>::deserialize(&mut de).expect("batch");
    s.out.clear();
    for m in &b.messages {
        black_box((&m.channel, &m.event, &m.idempotency_key));
        m.payload.write(&mut s.out).expect("write to a Vec");
    }
    drop(b);
    s.tape = de.into_tape().reset();
    s.out.len()
}

fn batch_simd_span(s: &mut Simd, src: &[u8]) -> usize {
    let tape = simd_tape!(s, src);
    let mut de = Deserializer::from_tape(tape);
    let b = SimdBatch::<IgnoredAny>::deserialize(&mut de).expect("batch");
    for m in &b.messages {
        black_box((&m.channel, &m.event, &m.idempotency_key));
    }
    let items = b.messages.len();
    drop(b);
    s.tape = de.into_tape().reset();
    payload_spans(src, s.buffers.structural_indexes(), 3, &mut s.spans);
    assert_eq!(s.spans.len(), items);
    s.out.clear();
    for p in &s.spans {
        s.out.extend_from_slice(&src[p.clone()]);
    }
    s.out.len()
}

// ---- correctness, once, outside the timings ----

fn same_json(a: &[u8], b: &[u8]) -> bool {
    let a: serde_json::Value = serde_json::from_slice(a).expect("valid JSON");
    let b: serde_json::Value = serde_json::from_slice(b).expect("valid JSON");
    a == b
}

fn check(ws: &Cases, batches: &Cases) {
    let input = r#"{"a": 1.0, "b":"\u00e9", "c" : [1,2]}"#;
    let frame = publish_frame(input);
    let mut s = Simd::new(frame.len());
    ws_simd_reserialize(&mut s, &frame);
    let again = String::from_utf8(s.out.clone()).expect("UTF-8");
    println!(
        "pass-through check: payload {input}\n  simd-json re-serialized: {again}\n  byte-identical: {}",
        again == input
    );
    ws_simd_span(&mut s, &frame);
    assert_eq!(s.out, input.as_bytes(), "span pass-through");

    let mut out = Vec::new();
    for (name, frame) in ws {
        let mut s = Simd::new(frame.len());
        ws_serde_json(frame, &mut out);
        ws_simd_span(&mut s, frame);
        assert_eq!(s.out, out, "{name}: span differs from RawValue");
        ws_simd_reserialize(&mut s, frame);
        assert!(
            same_json(&s.out, &out),
            "{name}: re-serialized payload differs"
        );
        println!(
            "{name}: frame {} B; payload {} B, re-serialized {} B (byte-identical: {})",
            frame.len(),
            out.len(),
            s.out.len(),
            s.out == out
        );
    }
    for (name, body) in batches {
        let mut s = Simd::new(body.len());
        batch_serde_json(body.as_bytes(), &mut out);
        batch_simd_span(&mut s, body.as_bytes());
        assert_eq!(s.out, out, "{name}: spans differ from RawValue");
        batch_simd_reserialize(&mut s, body.as_bytes());
        assert_eq!(s.out.len(), out.len(), "{name}: re-serialized length");
        println!("{name}: body {} B", body.len());
    }
    println!("simd-json stage 1: {}", Deserializer::algorithm());
}

// ---- benchmarks ----

fn group<'a>(c: &'a mut Criterion, name: &str, bytes: usize) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::BytesDecimal(bytes as u64));
    g
}

/// (benchmark group name, input) pairs.
type Cases = Vec<(String, String)>;

fn inputs() -> (Cases, Cases) {
    const KIB: usize = 1024;
    let mut ws = Vec::new();
    for (label, size) in [
        ("100B", 100),
        ("4KiB", 4 * KIB),
        ("64KiB", 64 * KIB),
        ("256KiB", 256 * KIB),
    ] {
        ws.push((
            format!("ws_publish/str_{label}"),
            publish_frame(&str_payload(size, 1)),
        ));
    }
    for (label, size) in [("4KiB", 4 * KIB), ("64KiB", 64 * KIB)] {
        ws.push((
            format!("ws_publish/mixed_{label}"),
            publish_frame(&mixed_payload(size)),
        ));
    }
    let batches = vec![
        ("http_batch/100x100B".to_string(), batch_body(100, 100)),
        ("http_batch/10x4KiB".to_string(), batch_body(10, 4 * KIB)),
    ];
    (ws, batches)
}

fn benches(c: &mut Criterion) {
    let (ws, batches) = inputs();
    check(&ws, &batches);
    for (name, frame) in &ws {
        let mut g = group(c, name, frame.len());
        let mut out = Vec::new();
        let mut s = Simd::new(frame.len());
        g.bench_function("serde_json", |b| {
            b.iter(|| ws_serde_json(black_box(frame), &mut out))
        });
        g.bench_function("simd_reserialize", |b| {
            b.iter(|| ws_simd_reserialize(&mut s, black_box(frame)))
        });
        g.bench_function("simd_span", |b| {
            b.iter(|| ws_simd_span(&mut s, black_box(frame)))
        });
        g.bench_function("simd_tape", |b| {
            b.iter(|| simd_tape_only(&mut s, black_box(frame.as_bytes())))
        });
        g.bench_function("memcpy", |b| {
            b.iter(|| memcpy(&mut s, black_box(frame.as_bytes())))
        });
        g.finish();
    }
    for (name, body) in &batches {
        let body = body.as_bytes();
        let mut g = group(c, name, body.len());
        let mut out = Vec::new();
        let mut s = Simd::new(body.len());
        g.bench_function("serde_json", |b| {
            b.iter(|| batch_serde_json(black_box(body), &mut out))
        });
        g.bench_function("simd_reserialize", |b| {
            b.iter(|| batch_simd_reserialize(&mut s, black_box(body)))
        });
        g.bench_function("simd_span", |b| {
            b.iter(|| batch_simd_span(&mut s, black_box(body)))
        });
        g.bench_function("simd_tape", |b| {
            b.iter(|| simd_tape_only(&mut s, black_box(body)))
        });
        g.bench_function("memcpy", |b| b.iter(|| memcpy(&mut s, black_box(body))));
        g.finish();
    }
}

criterion_group!(publish_parse, benches);
criterion_main!(publish_parse);
