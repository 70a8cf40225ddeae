//! What a decision is about: the channel name the client asked for, the channel record (for
//! `realtime.channels` policies), the message (for `realtime.messages` policies) and the caller.
//! Everything is borrowed; JSON (the payload, the claims) is parsed at most once, on first use,
//! and kept in the `LazyJson` that owns it. Build a `MessageRow` once per message and an
//! `AuthInfo` once per connection to share those parses between decisions.
//!
//! Per-core values: `LazyJson` caches in a `OnceCell`, so it is `Send` but not `Sync`.
//! A document owned elsewhere (a token's claims, a payload parsed once per message and shared
//! by every subscriber's decision) is lent through `JsonSource` and still parsed only when read.

use std::cell::OnceCell;

use serde_json::Value as Json;

use crate::auth::Role;

/// Something that yields a JSON document on demand, parsing it at most once.
pub trait JsonSource {
    fn json(&self) -> Option<&Json>;
}

/// A JSON document given as raw text and parsed on first use, given already parsed, or
/// lent by a `JsonSource` that parses it on first use.
#[derive(Default)]
pub struct LazyJson<'a> {
    raw: Option<&'a str>,
    given: Option<&'a Json>,
    source: Option<&'a dyn JsonSource>,
    parsed: OnceCell<Option<Json>>,
}

impl std::fmt::Debug for LazyJson<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyJson")
            .field("raw", &self.raw)
            .field("given", &self.given)
            .field("lent", &self.source.is_some())
            .finish_non_exhaustive()
    }
}

impl JsonSource for LazyJson<'_> {
    fn json(&self) -> Option<&Json> {
        self.get()
    }
}

impl<'a> LazyJson<'a> {
    /// Raw JSON text, parsed when a policy first reads it (invalid JSON reads as NULL).
    pub fn raw(text: &'a str) -> Self {
        Self {
            raw: Some(text),
            ..Self::default()
        }
    }

    /// An already parsed document (the claims kept on a connection, say).
    pub fn parsed(value: &'a Json) -> Self {
        Self {
            given: Some(value),
            ..Self::default()
        }
    }

    /// A document owned by `source` and parsed there on first read, so every `LazyJson`
    /// lent the same source shares one parse.
    pub fn lent(source: &'a dyn JsonSource) -> Self {
        Self {
            source: Some(source),
            ..Self::default()
        }
    }

    /// No document: policies read NULL.
    pub fn absent() -> Self {
        Self::default()
    }

    pub(crate) fn get(&self) -> Option<&Json> {
        if let Some(v) = self.given {
            return Some(v);
        }
        if let Some(s) = self.source {
            return s.json();
        }
        let raw = self.raw?;
        self.parsed
            .get_or_init(|| serde_json::from_str(raw).ok())
            .as_ref()
    }
}

/// A `realtime.channels` row, for subscribe policies.
#[derive(Debug, Clone, Copy)]
pub struct ChannelRow<'a> {
    pub pattern: &'a str,
    pub enabled: bool,
    pub description: Option<&'a str>,
}

/// A `realtime.messages` row, for publish and receive policies.
#[derive(Debug)]
pub struct MessageRow<'a> {
    pub channel_name: &'a str,
    pub event_name: &'a str,
    pub payload: LazyJson<'a>,
    /// `user` or `system`.
    pub sender_type: &'a str,
    pub sender_id: Option<&'a str>,
}

/// The caller: `auth.uid()`, `auth.role()`, `auth.email()`, `auth.jwt()`, and the role the
/// RLS policies are chosen by.
#[derive(Debug)]
pub struct AuthInfo<'a> {
    pub uid: Option<&'a str>,
    pub role: Role,
    pub email: Option<&'a str>,
    pub claims: LazyJson<'a>,
}

/// One decision's context. Cheap to build (references only) and `Copy`.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// `realtime.channel_name()`: the concrete name asked for (`order:123`), not the pattern.
    pub channel_name: &'a str,
    /// The matched channel record; `None` reads its columns as NULL.
    pub channel: Option<&'a ChannelRow<'a>>,
    /// The message being published or delivered; `None` reads its columns as NULL.
    pub message: Option<&'a MessageRow<'a>>,
    pub auth: &'a AuthInfo<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_json_parses_once_and_only_when_read() {
        let j = LazyJson::raw(r#"{"a":1}"#);
        assert!(j.parsed.get().is_none());
        assert_eq!(j.get().unwrap()["a"], 1);
        assert!(std::ptr::eq(j.get().unwrap(), j.get().unwrap()));
        assert!(LazyJson::raw("{nope").get().is_none());
        assert!(LazyJson::absent().get().is_none());
        let v = serde_json::json!([1]);
        assert_eq!(LazyJson::parsed(&v).get(), Some(&v));
    }

    #[test]
    fn lent_documents_share_one_parse() {
        let owner = LazyJson::raw(r#"{"a":1}"#);
        let (x, y) = (LazyJson::lent(&owner), LazyJson::lent(&owner));
        assert!(owner.parsed.get().is_none(), "lending parses nothing");
        assert_eq!(x.get().unwrap()["a"], 1);
        assert!(std::ptr::eq(x.get().unwrap(), y.get().unwrap()));
        assert!(std::ptr::eq(x.get().unwrap(), owner.get().unwrap()));
    }
}
