//! `ChannelTable`: the immutable snapshot of enabled channels that every core resolves names
//! against. Built by the control thread on every registry change and pushed to the cores as an
//! `Arc`; cores never lock or mutate it.
//!
//! Resolution (CONTRACT.md): among enabled records, the record whose pattern equals the name;
//! else the matching pattern with the longest literal prefix (ties: the longest pattern).
//!
//! Wildcard patterns whose first segment is literal (`order:*`) can only match names with that
//! first segment, so they are grouped by it: a name tries its group and the (usually few)
//! patterns whose first segment holds a wildcard (`*`, `ord*:x`), not every pattern.

use std::{cmp::Reverse, collections::HashMap, sync::Arc};

use super::ChannelRecord;

#[derive(Debug, Default)]
pub struct ChannelTable {
    /// Bumped on every change; lets a core tell an old snapshot from a new one.
    pub version: u64,
    exact: HashMap<Arc<str>, Arc<ChannelRecord>>,
    /// Wildcard patterns by literal first segment, each group in resolution order.
    by_head: HashMap<Box<str>, Vec<Arc<ChannelRecord>>>,
    /// Wildcard patterns whose first segment holds a wildcard, in resolution order.
    floating: Vec<Arc<ChannelRecord>>,
}

/// Resolution order: longest literal prefix, then longest pattern, then by text (stable).
fn rank(r: &ChannelRecord) -> (Reverse<usize>, Reverse<usize>, &str) {
    let p = r.pattern.as_str();
    (Reverse(r.pattern.literal_prefix_len()), Reverse(p.len()), p)
}

fn head(s: &str) -> &str {
    s.split(':').next().unwrap_or(s)
}

impl ChannelTable {
    pub fn build(version: u64, records: impl IntoIterator<Item = Arc<ChannelRecord>>) -> Self {
        let mut exact = HashMap::new();
        let mut by_head: HashMap<Box<str>, Vec<Arc<ChannelRecord>>> = HashMap::new();
        let mut floating = Vec::new();
        for r in records.into_iter().filter(|r| r.enabled) {
            let p = r.pattern.as_str();
            if !r.pattern.has_wildcard() {
                exact.insert(Arc::from(p), r);
            } else if head(p).contains(['*', '%']) {
                floating.push(r);
            } else {
                by_head.entry(head(p).into()).or_default().push(r);
            }
        }
        floating.sort_by(|a, b| rank(a).cmp(&rank(b)));
        for group in by_head.values_mut() {
            group.sort_by(|a, b| rank(a).cmp(&rank(b)));
        }
        Self {
            version,
            exact,
            by_head,
            floating,
        }
    }

    /// The enabled record a concrete channel name resolves to, if any.
    pub fn resolve(&self, name: &str) -> Option<&Arc<ChannelRecord>> {
        if let Some(r) = self.exact.get(name) {
            return Some(r);
        }
        let grouped = self
            .by_head
            .get(head(name))
            .and_then(|g| g.iter().find(|r| r.pattern.matches(name)));
        let floating = self.floating.iter().find(|r| r.pattern.matches(name));
        match (grouped, floating) {
            (Some(g), Some(f)) => Some(if rank(g) <= rank(f) { g } else { f }),
            (g, f) => g.or(f),
        }
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.by_head.values().map(Vec::len).sum::<usize>() + self.floating.len()
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
    fn grouped_and_floating_patterns_compete_by_rank() {
        let t = ChannelTable::build(
            1,
            [
                rec("ord*", true),
                rec("order:*", true),
                rec("order:12*", true),
                rec("*:99", true),
                rec("x%y:*", true),
            ],
        );
        let p = |n: &str| t.resolve(n).map(|r| r.pattern.as_str().to_string());
        // `order:*` (prefix 6) beats floating `ord*` (prefix 3).
        assert_eq!(p("order:1").as_deref(), Some("order:*"));
        assert_eq!(p("order:123").as_deref(), Some("order:12*"));
        // Only floating patterns can match other heads.
        assert_eq!(p("orders").as_deref(), Some("ord*"));
        assert_eq!(p("a:99").as_deref(), Some("*:99"));
        assert_eq!(p("x-y:1").as_deref(), Some("x%y:*"));
        assert_eq!(p("zzz"), None);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn disabled_records_are_ignored() {
        let t = ChannelTable::build(1, [rec("off:*", false)]);
        assert!(t.resolve("off:1").is_none());
    }
}
