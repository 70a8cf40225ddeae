//! Listening sockets: one SO_REUSEPORT listener per core on the same address, so the kernel
//! spreads accepts across cores. Before binding, a probe without SO_REUSEPORT detects a port
//! already served by another process (which SO_REUSEPORT would otherwise silently share).

use std::{io, net::SocketAddr};

use socket2::{Domain, Socket, Type};

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("{0} is already in use by another process; refusing to share it")]
    InUse(SocketAddr),
    #[error("cannot listen on {0}: {1}")]
    Io(SocketAddr, io::Error),
}

pub fn bind(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, ListenError> {
    let io = |e| ListenError::Io(addr, e);
    if addr.port() != 0 {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(io)?;
        probe.set_reuse_address(true).map_err(io)?;
        match probe.bind(&addr.into()) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(ListenError::InUse(addr)),
            Err(e) => return Err(io(e)),
            Ok(()) => {}
        }
    }
    let mut out = Vec::with_capacity(n);
    let mut actual = addr;
    for _ in 0..n {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(io)?;
        s.set_reuse_address(true).map_err(io)?;
        s.set_reuse_port(true).map_err(io)?;
        s.set_nonblocking(true).map_err(io)?;
        s.bind(&actual.into()).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                ListenError::InUse(actual)
            } else {
                io(e)
            }
        })?;
        s.listen(4096).map_err(io)?;
        if actual.port() == 0 {
            actual = s
                .local_addr()
                .map_err(io)?
                .as_socket()
                .expect("an inet socket has an inet address");
        }
        out.push(s.into());
    }
    Ok(out)
}
