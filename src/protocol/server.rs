//! Server -> client messages. Replies are `ServerMsg`; a delivered publication is a
//! `MessageFrame`, serialized once per publish by the sequencer and shared by every subscriber.

use serde::Serialize;
use serde_json::value::RawValue;

/// Replies to one connection (`ref` echoed when the client sent one).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    AuthSuccess {
        #[serde(rename = "userId")]
        user_id: Option<&'a str>,
        role: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a RawValue>,
    },
    Error {
        message: &'a str,
        code: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        /// `OUTCOME_UNKNOWN`: the message whose fate is unknown.
        #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a str>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a RawValue>,
    },
    Subscribed {
        channel: &'a str,
        #[serde(rename = "subscriptionId")]
        subscription_id: &'a str,
        /// The channel's offset when the subscription started: every message after it follows.
        offset: u64,
        /// Identifies the channel's history; it changes when that history is lost.
        epoch: &'a str,
        /// Present when the subscribe asked to recover (`since`): whether every missed
        /// message follows.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// With `recovered: false`: the first offset still retained (history before it is gone).
        #[serde(rename = "firstOffset", skip_serializing_if = "Option::is_none")]
        first_offset: Option<u64>,
        /// Present when the subscribe asked for presence: the channel's members.
        #[serde(skip_serializing_if = "Option::is_none")]
        presence: Option<PresenceSnapshot<'a>>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a RawValue>,
    },
    /// A member joined or left a channel the subscriber asked presence for.
    Presence {
        channel: &'a str,
        /// `join` or `leave`.
        event: &'a str,
        member: &'a crate::presence::Member,
    },
    Unsubscribed {
        channel: &'a str,
        /// Set when the server ended the subscription (channel disabled or deleted).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a RawValue>,
    },
    /// The session's token expires at `expiresAt` (RFC 3339): send a new `auth` before then.
    TokenExpiring {
        #[serde(rename = "expiresAt")]
        expires_at: &'a str,
    },
    /// The server is going away: where this connection stands in each subscribed channel,
    /// to present as `since` on another node.
    Reconnect {
        channels: std::collections::BTreeMap<&'a str, ChannelPosition<'a>>,
    },
    Published {
        #[serde(rename = "messageId")]
        message_id: &'a str,
        channel: &'a str,
        event: &'a str,
        offset: u64,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a RawValue>,
    },
}

/// A subscriber's place in a channel: the last offset it was sent, and the channel's epoch.
#[derive(Debug, Serialize)]
pub struct ChannelPosition<'a> {
    pub offset: u64,
    pub epoch: &'a str,
}

/// The seed's `message` frame plus `senderType` and the per-channel `offset`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message_id: &'a str,
    pub channel: &'a str,
    pub event: &'a str,
    pub payload: &'a RawValue,
    pub sender_id: Option<&'a str>,
    pub sender_type: &'a str,
    pub timestamp: &'a str,
    pub offset: u64,
}

/// The members of a channel, in `subscribed` (and the Socket.IO subscribe ack).
#[derive(Debug, Serialize)]
pub struct PresenceSnapshot<'a> {
    pub members: &'a [crate::presence::Member],
}
