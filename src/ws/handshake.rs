//! The server side of the RFC 6455 opening handshake: validates the upgrade request and
//! writes the `101 Switching Protocols` answer (`tungstenite::handshake::derive_accept_key`).

use tungstenite::handshake::derive_accept_key;

use crate::http::{ApiError, Head};

/// The 101 response bytes, or the HTTP error to answer with.
pub fn response(h: &Head) -> Result<Vec<u8>, ApiError> {
    if h.method != "GET" {
        return Err(ApiError::method_not_allowed(
            "WebSocket upgrade requires GET",
        ));
    }
    if !h.upgrade_websocket || !h.connection_upgrade {
        return Err(ApiError {
            status: 426,
            code: "UPGRADE_REQUIRED",
            message: "this endpoint speaks WebSocket: send Upgrade: websocket".into(),
        });
    }
    if h.http10 {
        return Err(ApiError::bad_request(
            "a WebSocket upgrade needs HTTP/1.1 (RFC 6455 §4.1)",
        ));
    }
    if h.ws_version.as_deref() != Some("13") {
        return Err(ApiError::bad_request("Sec-WebSocket-Version must be 13"));
    }
    let key = h
        .ws_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    // RFC 6455 §4.1: the key is 16 random bytes, base64-encoded (24 characters).
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.as_bytes());
    if !decoded.is_ok_and(|b| b.len() == 16) {
        return Err(ApiError::bad_request(
            "Sec-WebSocket-Key must be 16 bytes, base64-encoded",
        ));
    }
    let accept = derive_accept_key(key.as_bytes());
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
    )
    .into_bytes())
}
