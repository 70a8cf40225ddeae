//! `OutFrame`: one encoded frame as a core queues it to its connections. The serialized
//! `Bytes` (shared between cores, atomically counted) is wrapped once per core in an `Rc`, so
//! queuing one publish to 1,000 local subscribers costs 1,000 plain increments instead of
//! 1,000 atomic ones (and as many atomic decrements when the writes complete). perf put the
//! atomic `Bytes` clone and drop at ~9 % of a core at 2M deliveries/s.
//!
//! monoio writes an `Rc<Bytes>` as it is (its `IoBuf` for `Rc<T>`): the kernel reads the
//! bytes from the shared buffer, which stays put while any clone is alive.

use std::rc::Rc;

use bytes::Bytes;

pub type OutFrame = Rc<Bytes>;

#[cfg(test)]
mod tests {
    use monoio::buf::IoBuf;

    use super::*;

    #[test]
    fn clones_share_one_buffer() {
        let a: OutFrame = OutFrame::new(Bytes::from(vec![1u8, 2, 3]));
        let b = a.clone();
        assert_eq!(a.read_ptr(), b.read_ptr());
        assert_eq!(&b[..], &[1, 2, 3]);
        assert_eq!(b.bytes_init(), 3);
    }
}
