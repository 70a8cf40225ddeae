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
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a RawValue>,
    },
    Subscribed {
        channel: &'a str,
        #[serde(rename = "subscriptionId")]
        subscription_id: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a RawValue>,
    },
    Unsubscribed {
        channel: &'a str,
        /// Set when the server ended the subscription (channel disabled or deleted).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a RawValue>,
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
