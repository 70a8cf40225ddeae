//! A connection's socket halves as the front ends use them, the read the sweeper can cancel
//! (`Conn::cancel_read`), and the lingering close.

use bytes::BytesMut;
use monoio::{
    buf::IoBufMut,
    io::{CancelableAsyncReadRent, OwnedReadHalf, OwnedWriteHalf},
    net::TcpStream,
};

use super::conn::Conn;

/// How long a closed connection's input is drained at most (`linger`).
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// After the last answer was written and the write side shut down (FIN sent): reads and
/// discards the peer's input until it closes too, for at most `LINGER`. Closing a socket
/// whose receive queue holds unread bytes makes the kernel send RST at once and discard what
/// is still queued for the peer, so a 1009 close, a 431 or the end of a long answer would be
/// lost behind the bytes that caused them (RFC 6455 §7.1.1, RFC 9112 §9.6).
/// Stops early once `stop` says so (the server is shutting down: its threads end, and a read
/// still in flight would keep the socket open).
pub async fn linger(rd: &mut Reader, stop: impl Fn() -> bool) {
    use monoio::io::AsyncReadRent;
    const STEP: std::time::Duration = std::time::Duration::from_millis(100);
    let end = std::time::Instant::now() + LINGER;
    let mut buf = vec![0u8; 64 << 10];
    while !stop() && std::time::Instant::now() < end {
        match monoio::time::timeout(STEP, rd.read(buf)).await {
            Ok((Ok(n), b)) if n > 0 => buf = b,
            Ok(_) => return,
            // The read is cancelled; its buffer goes with it.
            Err(_) => buf = vec![0u8; 64 << 10],
        }
    }
}

pub type Reader = OwnedReadHalf<TcpStream>;
pub type Writer = OwnedWriteHalf<TcpStream>;

/// Reads more bytes into `buf` (cancellable by the sweeper). `Ok(0)`: peer closed.
pub async fn read_more(
    rd: &mut Reader,
    buf: &mut BytesMut,
    conn: &Conn,
    want: usize,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    let len = buf.len();
    let owned = std::mem::take(buf);
    let (res, slice) = rd
        .cancelable_read(owned.slice_mut(len..), conn.cancel_handle())
        .await;
    *buf = slice.into_inner();
    res
}
