//! A connection's socket halves as the front ends use them, and the read the sweeper can
//! cancel (`Conn::cancel_read`).

use bytes::BytesMut;
use monoio::{
    buf::IoBufMut,
    io::{CancelableAsyncReadRent, OwnedReadHalf, OwnedWriteHalf},
    net::TcpStream,
};

use super::conn::Conn;

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
