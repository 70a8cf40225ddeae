//! Where the harness may connect: parses `ws://HOST:PORT/PATH` URLs, refuses non-loopback hosts
//! unless `--allow-remote`, and picks the 127.0.0.x source address for connection `i` so that
//! more than one address's ~28k ephemeral ports are available. The same guard applies to the
//! webhook URLs the harness asks the broker to POST to (`--webhook-url`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use anyhow::{Context, bail};

/// One broker node.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given (used for the WebSocket handshake).
    pub url: String,
    pub host: String,
    /// The request path, e.g. `/realtime`.
    pub path: String,
    pub addr: SocketAddr,
}

impl Target {
    pub fn parse(url: &str, allow_remote: bool) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .with_context(|| format!("{url}: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            bail!("{url}: expected ws://HOST:PORT/PATH");
        }
        let addr = resolve(url, authority, 80)?;
        guard(url, addr, allow_remote)?;
        Ok(Self {
            url: url.to_string(),
            host: authority.to_string(),
            path: path.to_string(),
            addr,
        })
    }

    /// Whether source addresses in 127.0.0.0/8 can be used toward this node.
    pub fn is_loopback_v4(&self) -> bool {
        matches!(self.addr.ip(), IpAddr::V4(ip) if ip.is_loopback())
    }
}

/// The socket address of `authority` (`HOST[:PORT]`, IPv6 hosts in brackets).
fn resolve(url: &str, authority: &str, default_port: u16) -> anyhow::Result<SocketAddr> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port: u16 = p.parse().with_context(|| format!("{url}: bad port"))?;
            (h.trim_start_matches('[').trim_end_matches(']'), port)
        }
        _ => (
            authority.trim_start_matches('[').trim_end_matches(']'),
            default_port,
        ),
    };
    let addr = match host {
        "localhost" => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        h => match h.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => (h, port)
                .to_socket_addrs()
                .with_context(|| format!("{url}: cannot resolve {h}"))?
                .next()
                .with_context(|| format!("{url}: {h} has no address"))?,
        },
    };
    Ok(addr)
}

fn guard(url: &str, addr: SocketAddr, allow_remote: bool) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && !allow_remote {
        bail!(
            "{url}: {} is not a loopback address; this harness only loads this machine \
             unless --allow-remote is given",
            addr.ip()
        );
    }
    Ok(())
}

/// Checks a `--webhook-url`: an absolute `http://` or `https://` URL whose host is loopback
/// (unless `allow_remote`), so a run never makes the broker load another machine by mistake.
pub fn check_webhook_url(url: &str, allow_remote: bool) -> anyhow::Result<()> {
    let (rest, port) = if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else if let Some(r) = url.strip_prefix("https://") {
        (r, 443)
    } else {
        bail!("--webhook-url {url}: expected an http:// or https:// URL");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        bail!("--webhook-url {url}: expected http://HOST[:PORT]/PATH");
    }
    let addr = resolve(url, authority, port)?;
    guard(url, addr, allow_remote)
}

/// Source address for connection number `i`: 127.0.0.(1 + i % n) when the target is IPv4
/// loopback and `n > 0`; otherwise let the kernel choose.
pub fn source_for(t: &Target, i: usize, n: usize) -> Option<SocketAddr> {
    if n == 0 || !t.is_loopback_v4() {
        return None;
    }
    let last = 1 + (i % n.min(254)) as u8;
    Some(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
        0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_guards() {
        let t = Target::parse("ws://127.0.0.1:18081/realtime", false).expect("loopback ok");
        assert_eq!(t.addr.port(), 18081);
        assert_eq!(t.host, "127.0.0.1:18081");
        assert_eq!(t.path, "/realtime");
        assert!(Target::parse("ws://localhost:1/realtime", false).is_ok());
        assert!(Target::parse("ws://[::1]:9/realtime", false).is_ok());
        assert!(Target::parse("ws://10.0.0.1:80/realtime", false).is_err());
        assert!(Target::parse("wss://127.0.0.1:80/realtime", false).is_err());
        assert!(Target::parse("ws://127.0.0.1:notaport/", false).is_err());
    }

    #[test]
    fn guards_webhook_urls() {
        assert!(check_webhook_url("http://127.0.0.1:18999/hook", false).is_ok());
        assert!(check_webhook_url("http://localhost/hook", false).is_ok());
        assert!(check_webhook_url("https://[::1]:8443", false).is_ok());
        assert!(check_webhook_url("http://10.0.0.1:80/hook", false).is_err());
        assert!(check_webhook_url("http://10.0.0.1:80/hook", true).is_ok());
        assert!(check_webhook_url("ftp://127.0.0.1/hook", false).is_err());
        assert!(check_webhook_url("http:///hook", false).is_err());
        assert!(check_webhook_url("http://u@127.0.0.1/", false).is_err());
    }

    #[test]
    fn spreads_sources() {
        let t = Target::parse("ws://127.0.0.1:1/realtime", false).expect("ok");
        assert_eq!(
            source_for(&t, 0, 4).map(|a| a.ip().to_string()),
            Some("127.0.0.1".into())
        );
        assert_eq!(
            source_for(&t, 5, 4).map(|a| a.ip().to_string()),
            Some("127.0.0.2".into())
        );
        assert_eq!(source_for(&t, 5, 0), None);
    }
}
