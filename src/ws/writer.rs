//! The writer task of one WebSocket: waits on the connection's outbox and writes everything
//! queued in as few syscalls as possible (one frame: written as is, zero-copy; several:
//! gathered into one buffer of at most `MAX_BATCH` bytes). Ends when the outbox is finished
//! and empty, or when a write fails or is cancelled.

use std::{future::poll_fn, rc::Rc};

use bytes::Bytes;
use monoio::io::{AsyncWriteRent, CancelableAsyncWriteRentExt};

use crate::core::{Core, conn::Conn, serve::Writer};

const MAX_BATCH: usize = 256 << 10;
/// A gather buffer larger than this is released after use rather than kept per connection.
const KEEP_BATCH: usize = 16 << 10;

pub async fn run(core: Rc<Core>, conn: Rc<Conn>, mut wr: Writer) {
    let mut frames: Vec<Bytes> = Vec::new();
    let mut batch: Vec<u8> = Vec::new();
    loop {
        poll_fn(|cx| conn.outbox.poll_ready(cx)).await;
        let done = conn.outbox.drain_into(&mut frames, MAX_BATCH);
        if !frames.is_empty() {
            let h = conn.write_cancel_handle();
            let res = if frames.len() == 1 {
                let f = frames.pop().expect("one frame");
                CancelableAsyncWriteRentExt::write_all(&mut wr, f, h)
                    .await
                    .0
            } else {
                batch.clear();
                for f in frames.drain(..) {
                    batch.extend_from_slice(&f);
                }
                let (r, b) = CancelableAsyncWriteRentExt::write_all(&mut wr, batch, h).await;
                batch = b;
                if batch.capacity() > KEEP_BATCH {
                    batch = Vec::new();
                }
                r
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
