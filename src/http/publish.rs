//! Publishing over HTTP: `POST /api/realtime/messages` (one message) and
//! `POST /api/realtime/messages/batch` (up to `MAX_BATCH`). Each item takes the WebSocket
//! publish's path: the same checks and limits (channel, event, payload size, idempotency key,
//! the publish policy, the connection's rate limit), then `Core::publish`, so it is sequenced,
//! stored, delivered and acknowledged exactly as a WebSocket publish. Failures carry the
//! WebSocket error `code` with an HTTP status (`status_of`).
//!
//! The handler runs on the core that read the request and waits only for the acks (a
//! `oneshot` per item). Items of a batch are handed over in order before any ack is awaited,
//! so items of one channel keep their order.

use std::{borrow::Cow, sync::Arc, time::Duration, time::Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::{ApiError, Head, Response};
use crate::{
    auth::Identity,
    channel::ChannelName,
    control::{ConnId, PubAnswer, PublishReq},
    core::{Core, bucket::Bucket, sequencer::Refused},
    protocol::{ErrorCode, MAX_IDEMPOTENCY_KEY, check_idempotency_key},
    timestamp::Timestamp,
};

/// Most items in one batch.
pub const MAX_BATCH: usize = 1000;
/// Longest wait for an ack; past it the outcome is unknown (said so, not guessed).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// One message to publish, as read from the body (unchecked).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(rename = "idempotencyKey", borrow)]
    idempotency_key: Option<Cow<'a, str>>,
}

/// The body of a batch publish: its items, each still to be read with `parse_item`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch<'a> {
    #[serde(borrow)]
    pub messages: Vec<&'a RawValue>,
}

/// One item that passed the checks that need no state: a valid channel name, event name,
/// idempotency key, and a payload within `max_payload` bytes.
pub struct Checked {
    pub channel: ChannelName,
    pub event: Arc<str>,
    pub payload: Arc<RawValue>,
    pub idempotency_key: Option<Arc<str>>,
}

/// The ack of one published message.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Ack<'a> {
    message_id: String,
    channel: &'a str,
    event: &'a str,
    offset: u64,
    timestamp: String,
}

/// The HTTP status of a publish error code.
pub fn status_of(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::InvalidMessage | ErrorCode::UnknownType => 400,
        ErrorCode::InvalidToken | ErrorCode::Unauthorized => 401,
        ErrorCode::Forbidden => 403,
        ErrorCode::ChannelNotFound => 404,
        ErrorCode::PayloadTooLarge => 413,
        ErrorCode::RateLimited | ErrorCode::TooManySubscriptions => 429,
        ErrorCode::Internal => 500,
        ErrorCode::OutcomeUnknown => 503,
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::coded(status_of(code), code.as_str(), message)
}

/// Who is publishing: the admin key or a JWT (`Authorization: Bearer`).
pub fn authenticate(core: &Core, head: &Head) -> Result<Identity, ApiError> {
    let Some(auth) = head.authorization.as_deref() else {
        return Err(error(
            ErrorCode::Unauthorized,
            "missing Authorization: Bearer <token>",
        ));
    };
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .ok_or_else(|| {
            error(
                ErrorCode::Unauthorized,
                "Authorization must be `Bearer <token>`",
            )
        })?;
    // As on the WebSocket (CONTRACT.md): one message for a bad or an expired token.
    core.verifier
        .verify(token.trim())
        .map_err(|_| error(ErrorCode::InvalidToken, "Invalid token"))
}

/// A publish handed to the core, waiting for its ack.
struct Pending {
    channel: ChannelName,
    event: Arc<str>,
    ack: oneshot::Receiver<PubAnswer>,
}

/// `POST /api/realtime/messages`: 201 with the ack, or the error.
pub async fn one(core: &Core, who: &Identity, bucket: &mut Bucket, body: &[u8]) -> Response {
    let item = match parse_item(body) {
        Ok(i) => i,
        Err(e) => return Response::error(&e),
    };
    let r = match submit(core, who, bucket, item) {
        Ok(p) => settle(p).await,
        Err(e) => Err(e),
    };
    match r {
        Ok(json) => Response::json(201, json),
        Err(e) => Response::error(&e),
    }
}

/// `POST /api/realtime/messages/batch`: 200 with one result per item, in order.
pub async fn batch(core: &Core, who: &Identity, bucket: &mut Bucket, body: &[u8]) -> Response {
    let b = match parse_batch(body) {
        Ok(b) => b,
        Err(e) => return Response::error(&e),
    };
    // Every item is handed over before any ack is awaited (order within a channel).
    let handed: Vec<Result<Pending, ApiError>> = b
        .messages
        .iter()
        .map(|raw| submit(core, who, bucket, parse_item(raw.get().as_bytes())?))
        .collect();
    let mut out = Vec::with_capacity(b.messages.len() * 160 + 16);
    out.extend_from_slice(b"{\"results\":[");
    for (i, h) in handed.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match h {
            Ok(p) => match settle(p).await {
                Ok(json) => out.extend_from_slice(&json),
                Err(e) => out.extend_from_slice(&e.body()),
            },
            Err(e) => out.extend_from_slice(&e.body()),
        }
    }
    out.extend_from_slice(b"]}");
    Response::json(200, out)
}

/// Reads a batch body: an object with 1..=`MAX_BATCH` messages.
pub fn parse_batch(body: &[u8]) -> Result<Batch<'_>, ApiError> {
    if !crate::protocol::object::is_object(body) {
        return Err(ApiError::bad_request(
            "the body must be a JSON object: {\"messages\": [...]}",
        ));
    }
    let b: Batch<'_> = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid body: {e}; expected {{\"messages\": [...]}}"
        ))
    })?;
    if b.messages.is_empty() || b.messages.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "messages must hold 1..={MAX_BATCH} items"
        )));
    }
    Ok(b)
}

/// Reads one message: a JSON object `{channel, event, payload?, idempotencyKey?}`.
pub fn parse_item(body: &[u8]) -> Result<Item<'_>, ApiError> {
    if body.is_empty() {
        return Err(error(ErrorCode::InvalidMessage, "a JSON body is required"));
    }
    if !crate::protocol::object::is_object(body) {
        return Err(error(
            ErrorCode::InvalidMessage,
            "a message must be a JSON object: {\"channel\", \"event\", \"payload\", \"idempotencyKey\"?}",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        error(
            ErrorCode::InvalidMessage,
            format!(
                "invalid message: {e}; expected {{\"channel\", \"event\", \"payload\", \"idempotencyKey\"?}}"
            ),
        )
    })
}

/// The checks of an item that need no state, in the WebSocket publish's order.
pub fn check(item: Item<'_>, max_payload: usize) -> Result<Checked, ApiError> {
    let channel = ChannelName::parse(&item.channel).map_err(|e| {
        error(
            ErrorCode::InvalidMessage,
            format!("invalid channel `{}`: {e}", item.channel),
        )
    })?;
    crate::protocol::check_event_name(&item.event)
        .map_err(|m| error(ErrorCode::InvalidMessage, m))?;
    if let Some(k) = &item.idempotency_key {
        check_idempotency_key(k).map_err(|m| error(ErrorCode::InvalidMessage, m))?;
        debug_assert!(k.len() <= MAX_IDEMPOTENCY_KEY);
    }
    let payload: Arc<RawValue> = match item.payload {
        Some(p) => Arc::from(p.to_owned()),
        None => Arc::from(RawValue::from_string("null".into()).expect("valid JSON")),
    };
    if payload.get().len() > max_payload {
        return Err(error(
            ErrorCode::PayloadTooLarge,
            format!("payload exceeds {max_payload} bytes"),
        ));
    }
    Ok(Checked {
        channel,
        event: Arc::from(item.event.as_ref()),
        payload,
        idempotency_key: item.idempotency_key.map(|k| Arc::from(k.as_ref())),
    })
}

/// Checks one item as a WebSocket publish is checked and hands it to the core.
fn submit(
    core: &Core,
    who: &Identity,
    bucket: &mut Bucket,
    item: Item<'_>,
) -> Result<Pending, ApiError> {
    core.metrics().http_publishes_total.inc();
    let Checked {
        channel,
        event,
        payload,
        idempotency_key,
    } = check(item, core.cfg().max_payload_bytes)?;
    if core.resolve(&channel).is_none() {
        return Err(error(
            ErrorCode::ChannelNotFound,
            "Channel not found or not accessible",
        ));
    }
    if !core.may_publish(who, &channel, &event, &payload) {
        return Err(error(ErrorCode::Forbidden, "not allowed by policy"));
    }
    if let Err(over) = bucket.take(Instant::now(), payload.get().len()) {
        return Err(error(
            ErrorCode::RateLimited,
            crate::core::bucket::refusal(core.cfg(), over),
        ));
    }
    let (tx, rx) = oneshot::channel();
    let req = PublishReq {
        core: core.id,
        conn: ConnId(0),
        r#ref: None,
        channel: channel.clone(),
        event: event.clone(),
        payload,
        sender_id: who.user_id.clone(),
        sender_type: who.sender_type(),
        source: None,
        idempotency_key,
        http: Some(tx),
        proto: crate::protocol::Proto::Raw,
    };
    match core.publish(req) {
        Ok(()) => Ok(Pending {
            channel,
            event,
            ack: rx,
        }),
        Err(Refused::Busy) => {
            core.metrics().publishes_refused_busy_total.inc();
            Err(error(
                ErrorCode::RateLimited,
                "broker busy: publish not accepted, retry",
            ))
        }
        Err(Refused::Closing) => Err(ApiError::coded(
            503,
            ErrorCode::Internal.as_str(),
            "server shutting down: publish not accepted",
        )),
    }
}

/// Waits for one ack; the JSON of the ack, or the refusal.
async fn settle(p: Pending) -> Result<Vec<u8>, ApiError> {
    let unknown = |why: &str| {
        ApiError::coded(
            503,
            ErrorCode::OutcomeUnknown.as_str(),
            format!(
                "publish outcome unknown ({why}): it may have been published; retry with the same idempotencyKey"
            ),
        )
    };
    let answer = match monoio::time::timeout(ACK_TIMEOUT, p.ack).await {
        Ok(Ok(a)) => a,
        Ok(Err(_)) => return Err(unknown("the server is shutting down")),
        Err(_) => return Err(unknown("no answer within 10 s")),
    };
    match answer {
        PubAnswer::Published(a) => {
            let mut id = uuid::Uuid::encode_buffer();
            let ack = Ack {
                message_id: a.id.hyphenated().encode_lower(&mut id).to_string(),
                channel: p.channel.as_str(),
                event: &p.event,
                offset: a.offset,
                timestamp: Timestamp::rfc3339(a.created_at).as_str().to_string(),
            };
            Ok(serde_json::to_vec(&ack).expect("serializing an ack cannot fail"))
        }
        PubAnswer::Refused { code, message } => Err(error(code, message)),
    }
}
