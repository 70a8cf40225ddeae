//! The writer task of one WebSocket: waits on the connection's outbox and writes everything
//! queued in as few syscalls as possible (one frame: written as is, zero-copy; several: one
//! block of at most `MAX_BATCH` bytes, joined once per core for every writer that needs the
//! same frames, see `core::gather`). A write starts only with a permit of the core's send
//! gate (`core::send_gate`), and the frames are taken after it; how many there were tells the
//! gate whether the core is behind. Ends when the outbox is finished and
//! empty, when a write fails, or at once when the connection is killed (`Conn::abort`).

use std::{future::poll_fn, rc::Rc};

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use crate::core::{Core, conn::Conn, out_frame::OutFrame, socket::Writer};

const MAX_BATCH: usize = 256 << 10;

pub async fn run(core: Rc<Core>, conn: Rc<Conn>, mut wr: Writer) {
    let mut frames: Vec<OutFrame> = Vec::new();
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
                // Joined once per core: the writers of the other subscribers that are behind
                // by the same frames write the same block (`core::gather`).
                let block = core.gather.block(&frames);
                frames.clear();
                monoio::select! {
                    (r, _) = wr.write_all(block) => r,
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
