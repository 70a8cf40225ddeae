//! The writer task of one WebSocket: waits on the connection's outbox and writes everything
//! queued in as few syscalls as possible (one frame: written as is, zero-copy; several:
//! gathered into one buffer of at most `MAX_BATCH` bytes). A write starts only with a permit
//! of the core's send gate (`core::send_gate`), and the frames are taken after it; how many
//! there were tells the gate whether the core is behind. Ends when the outbox is finished and
//! empty, when a write fails, or at once when the connection is killed (`Conn::abort`).

use std::{future::poll_fn, rc::Rc};

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use crate::core::{Core, conn::Conn, out_frame::OutFrame, serve::Writer};

const MAX_BATCH: usize = 256 << 10;
/// A gather buffer larger than this is released after use rather than kept per connection.
const KEEP_BATCH: usize = 16 << 10;

pub async fn run(core: Rc<Core>, conn: Rc<Conn>, mut wr: Writer) {
    let mut frames: Vec<OutFrame> = Vec::new();
    let mut batch: Vec<u8> = Vec::new();
    loop {
        poll_fn(|cx| conn.outbox.poll_ready(cx)).await;
        // Take the frames only once the gate lets this write start: frames queued while we
        // waited go out in the same write.
        let _permit = monoio::select! {
            p = core.send_gate.acquire() => p,
            _ = poll_fn(|cx| conn.poll_killed(cx)) => break,
        };
        let done = conn.outbox.drain_into(&mut frames, MAX_BATCH);
        core.send_gate.note_write(frames.len());
        if !frames.is_empty() {
            // A killed connection drops the write in flight (monoio keeps its buffer until the
            // kernel lets go of it): the data is of no use to a peer we are cutting off.
            let res = if frames.len() == 1 {
                let f = frames.pop().expect("one frame");
                monoio::select! {
                    (r, _) = wr.write_all(f) => r,
                    _ = poll_fn(|cx| conn.poll_killed(cx)) => break,
                }
            } else {
                let mut buf = std::mem::take(&mut batch);
                buf.clear();
                for f in frames.drain(..) {
                    buf.extend_from_slice(&f);
                }
                monoio::select! {
                    (r, b) = wr.write_all(buf) => {
                        if b.capacity() <= KEEP_BATCH {
                            batch = b;
                        }
                        r
                    }
                    _ = poll_fn(|cx| conn.poll_killed(cx)) => break,
                }
            };
            match res {
                Ok(n) => core.metrics().bytes_out_total.add(n as u64),
                Err(_) => {
                    conn.abort();
                    break;
                }
            }
        }
        if done {
            break;
        }
    }
    let _ = wr.shutdown().await;
}
