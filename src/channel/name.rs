//! Validated channel names and patterns.
//!
//! A name is `:`-separated non-empty segments of `[A-Za-z0-9_.-]`, at most
//! [`MAX_NAME_LEN`] bytes. A pattern may also hold `*` (seed) and `%` (InsForge), both meaning
//! "any run of characters, `:` and the empty run included" (SQL `LIKE`). Matching is linear in
//! practice (greedy with one backtrack point), never exponential.

use std::{fmt, sync::Arc};

pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("channel name must not be empty")]
    Empty,
    #[error("channel name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error("channel name has an empty segment (`::`, or `:` at either end)")]
    EmptySegment,
    #[error("channel name has a character outside [A-Za-z0-9_.-:]: {0:?}")]
    BadChar(char),
    #[error("wildcards `*` and `%` are only allowed in patterns")]
    Wildcard,
}

/// A concrete channel a client subscribes or publishes to, e.g. `order:123`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

/// A channel record's pattern, e.g. `order:*`, `chat:%:messages`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelPattern(Arc<str>);

fn check(s: &str, wildcards: bool) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    for seg in s.split(':') {
        if seg.is_empty() {
            return Err(NameError::EmptySegment);
        }
        for c in seg.chars() {
            match c {
                'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '.' | '-' => {}
                '*' | '%' if wildcards => {}
                '*' | '%' => return Err(NameError::Wildcard),
                other => return Err(NameError::BadChar(other)),
            }
        }
    }
    Ok(())
}

impl ChannelName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check(s, false)?;
        Ok(Self(Arc::from(s)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// `db:<table>` channels carry database change notifications (filters apply).
    pub fn is_db(&self) -> bool {
        self.0.starts_with("db:")
    }
}

impl ChannelPattern {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check(s, true)?;
        Ok(Self(Arc::from(s)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn has_wildcard(&self) -> bool {
        self.0.contains(['*', '%'])
    }
    /// Bytes before the first wildcard: the resolution rule prefers the longest.
    pub fn literal_prefix_len(&self) -> usize {
        self.0.find(['*', '%']).unwrap_or(self.0.len())
    }
    pub fn matches(&self, name: &str) -> bool {
        like_match(self.0.as_bytes(), name.as_bytes())
    }
}

/// `LIKE` matching where `*` and `%` match any run (including empty). Greedy with a single
/// backtrack point: O(pattern x name) worst case, linear for typical patterns.
fn like_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'*' || p[pi] == b'%') {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*' || c == b'%')
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for ChannelPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ChannelPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for ChannelName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        ChannelPattern::parse(p).unwrap().matches(s)
    }

    #[test]
    fn wildcards_match_any_run() {
        assert!(m("order:*", "order:123"));
        assert!(m("order:%", "order:123"));
        assert!(m("order:*", "order:a:b"));
        assert!(m("chat:%:messages", "chat:room1:messages"));
        assert!(m("chat:*:messages", "chat:a:b:messages"));
        assert!(!m("chat:*:messages", "chat:room1:other"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
        assert!(m("order:*", "order:x"));
        assert!(!m("order:*", "orders:1"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
    }

    #[test]
    fn names_are_validated() {
        assert!(ChannelName::parse("order:123").is_ok());
        assert!(ChannelName::parse("db:posts").is_ok());
        assert_eq!(ChannelName::parse(""), Err(NameError::Empty));
        assert_eq!(ChannelName::parse("a::b"), Err(NameError::EmptySegment));
        assert_eq!(ChannelName::parse("a:"), Err(NameError::EmptySegment));
        assert_eq!(ChannelName::parse("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(ChannelName::parse("order:*"), Err(NameError::Wildcard));
        assert_eq!(
            ChannelName::parse(&"a".repeat(256)),
            Err(NameError::TooLong)
        );
        assert!(ChannelPattern::parse("order:*").is_ok());
        assert!(ChannelPattern::parse("chat:%:x").is_ok());
        assert!(ChannelPattern::parse("x y").is_err());
    }

    #[test]
    fn literal_prefix() {
        assert_eq!(
            ChannelPattern::parse("order:*")
                .unwrap()
                .literal_prefix_len(),
            6
        );
        assert_eq!(
            ChannelPattern::parse("abc").unwrap().literal_prefix_len(),
            3
        );
    }
}
