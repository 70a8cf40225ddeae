//! `ChannelTable`: the immutable snapshot of enabled channels that every core resolves names
//! against. Built by the control thread on every registry change and pushed to the cores as an
//! `Arc`; cores never lock or mutate it.
//!
//! Resolution (CONTRACT.md): among enabled records, the record whose pattern equals the name;
//! else the matching pattern with the longest literal prefix (ties: the longest pattern).

use std::{collections::HashMap, sync::Arc};

use super::ChannelRecord;

#[derive(Debug, Default)]
pub struct ChannelTable {
    /// Bumped on every change; lets a core tell an old snapshot from a new one.
    pub version: u64,
    exact: HashMap<Arc<str>, Arc<ChannelRecord>>,
    /// Wildcard patterns in resolution order: longest literal prefix, then longest pattern.
    wildcards: Vec<Arc<ChannelRecord>>,
}

impl ChannelTable {
    pub fn build(version: u64, records: impl IntoIterator<Item = Arc<ChannelRecord>>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        for r in records.into_iter().filter(|r| r.enabled) {
            if r.pattern.has_wildcard() {
                wildcards.push(r);
            } else {
                exact.insert(Arc::from(r.pattern.as_str()), r);
            }
        }
        wildcards.sort_by(|a, b| {
            let key =
                |r: &ChannelRecord| (r.pattern.literal_prefix_len(), r.pattern.as_str().len());
            key(b)
                .cmp(&key(a))
                .then_with(|| a.pattern.as_str().cmp(b.pattern.as_str()))
        });
        Self {
            version,
            exact,
            wildcards,
        }
    }

    /// The enabled record a concrete channel name resolves to, if any.
    pub fn resolve(&self, name: &str) -> Option<&Arc<ChannelRecord>> {
        if let Some(r) = self.exact.get(name) {
            return Some(r);
        }
        self.wildcards.iter().find(|r| r.pattern.matches(name))
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{channel::ChannelPattern, timestamp::Timestamp};

    fn rec(p: &str, enabled: bool) -> Arc<ChannelRecord> {
        Arc::new(ChannelRecord {
            id: uuid::Uuid::new_v4(),
            pattern: ChannelPattern::parse(p).unwrap(),
            description: None,
            webhook_urls: None,
            enabled,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
        })
    }

    #[test]
    fn exact_then_longest_prefix_then_longest_pattern() {
        let t = ChannelTable::build(
            1,
            [
                rec("*", true),
                rec("order:*", true),
                rec("order:1*", true),
                rec("order:123", true),
                rec("chat:*", true),
                rec("chat:*:x", true),
                rec("off:*", false),
            ],
        );
        let p = |n: &str| t.resolve(n).map(|r| r.pattern.as_str().to_string());
        assert_eq!(p("order:123").as_deref(), Some("order:123"));
        assert_eq!(p("order:124").as_deref(), Some("order:1*"));
        assert_eq!(p("order:9").as_deref(), Some("order:*"));
        assert_eq!(p("chat:a:x").as_deref(), Some("chat:*:x"));
        assert_eq!(p("chat:a:y").as_deref(), Some("chat:*"));
        assert_eq!(p("off:1").as_deref(), Some("*"));
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn disabled_records_are_ignored() {
        let t = ChannelTable::build(1, [rec("off:*", false)]);
        assert!(t.resolve("off:1").is_none());
    }
}
