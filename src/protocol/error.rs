//! Error codes carried by `{"type":"error"}` frames, and the error a bad client message becomes.

use serde_json::value::RawValue;

/// Stable codes from CONTRACT.md. Clients may switch on these; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidToken,
    Unauthorized,
    InvalidMessage,
    UnknownType,
    ChannelNotFound,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    TooManySubscriptions,
    Internal,
    /// The message was handed to the store, which did not answer in time: it may or may not
    /// have been published (the error carries its `messageId`).
    OutcomeUnknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidToken => "INVALID_TOKEN",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::InvalidMessage => "INVALID_MESSAGE",
            Self::UnknownType => "UNKNOWN_TYPE",
            Self::ChannelNotFound => "CHANNEL_NOT_FOUND",
            Self::Forbidden => "FORBIDDEN",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::RateLimited => "RATE_LIMITED",
            Self::TooManySubscriptions => "TOO_MANY_SUBSCRIPTIONS",
            Self::Internal => "INTERNAL",
            Self::OutcomeUnknown => "OUTCOME_UNKNOWN",
        }
    }
}

/// A client message that cannot be acted on: answered with an error frame, connection kept.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    /// The client's `ref`, when it could be read, echoed in the error frame.
    pub r#ref: Option<Box<RawValue>>,
    pub channel: Option<String>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            r#ref: None,
            channel: None,
        }
    }

    pub fn with_ref(mut self, r: Option<&RawValue>) -> Self {
        self.r#ref = r.map(|r| r.to_owned());
        self
    }

    pub fn with_channel(mut self, c: &str) -> Self {
        self.channel = Some(c.to_string());
        self
    }
}
