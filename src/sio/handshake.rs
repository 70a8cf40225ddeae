//! The Socket.IO upgrade request: `GET /socket.io/?EIO=4&transport=websocket` (any other
//! query parameters are accepted and ignored). Engine.IO's HTTP long-polling is not served:
//! a polling request gets a 400 that says how to configure the client.

use crate::http::{ApiError, Head};

/// Whether `path` is the Socket.IO endpoint.
pub fn is_path(path: &str) -> bool {
    path == "/socket.io/" || path == "/socket.io"
}

/// Checks the Engine.IO query of an upgrade request; the WebSocket handshake itself is the
/// raw front end's (`ws::handshake`).
pub fn check(h: &Head) -> Result<(), ApiError> {
    let mut eio = None;
    let mut transport = None;
    let mut sid = false;
    for pair in h.query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "EIO" => eio = Some(v),
            "transport" => transport = Some(v),
            "sid" => sid = true,
            _ => {}
        }
    }
    match eio {
        Some("4") => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "unsupported Engine.IO protocol version EIO={v}: ringcast speaks EIO=4 (socket.io-client 3 and later)"
            )));
        }
        None => {
            return Err(ApiError::bad_request(
                "missing EIO query parameter: connect with socket.io-client (EIO=4)",
            ));
        }
    }
    if transport != Some("websocket") {
        return Err(ApiError::bad_request(
            "only the websocket transport is served: pass transports: ['websocket'] to io() (the InsForge SDK does)",
        ));
    }
    if sid {
        return Err(ApiError::bad_request(
            "no polling session to upgrade: connect with transports: ['websocket']",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(q: &str) -> Head {
        let raw = format!("GET /socket.io/?{q} HTTP/1.1\r\nhost: x\r\n\r\n");
        crate::http::request::parse_head(raw.as_bytes(), 8192)
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn only_eio4_websocket() {
        assert!(check(&head("EIO=4&transport=websocket")).is_ok());
        assert!(check(&head("tenant=a&transport=websocket&EIO=4&t=x")).is_ok());
        let e = check(&head("EIO=4&transport=polling&t=abc")).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("transports: ['websocket']"),
            "{}",
            e.message
        );
        assert!(
            check(&head("EIO=3&transport=websocket"))
                .unwrap_err()
                .message
                .contains("EIO=3")
        );
        assert!(check(&head("transport=websocket")).is_err());
        assert!(check(&head("EIO=4&transport=websocket&sid=abc")).is_err());
        assert!(is_path("/socket.io/") && is_path("/socket.io") && !is_path("/socket.io/x"));
    }
}
