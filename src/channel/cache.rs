//! `ResolveCache`: a per-thread memo of name -> resolved record for one `ChannelTable`
//! version. Publishes to a hot channel resolve with one hash lookup instead of pattern
//! matching. Owned by one thread (a core, or the control thread); never shared.

use std::{collections::HashMap, sync::Arc};

use super::{ChannelName, ChannelRecord, ChannelTable};

/// Entries kept before the cache starts over (bounds memory under floods of distinct names).
const MAX_ENTRIES: usize = 16_384;

#[derive(Debug, Default)]
pub struct ResolveCache {
    version: u64,
    map: HashMap<ChannelName, Option<Arc<ChannelRecord>>>,
}

impl ResolveCache {
    /// `table.resolve(name)`, memoized; a table with another version empties the cache.
    pub fn resolve(
        &mut self,
        table: &ChannelTable,
        name: &ChannelName,
    ) -> Option<Arc<ChannelRecord>> {
        if self.version != table.version {
            self.map.clear();
            self.version = table.version;
        }
        if let Some(r) = self.map.get(name) {
            return r.clone();
        }
        let r = table.resolve(name.as_str()).cloned();
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
        }
        self.map.insert(name.clone(), r.clone());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{channel::ChannelPattern, timestamp::Timestamp};

    fn table(version: u64, patterns: &[&str]) -> ChannelTable {
        ChannelTable::build(
            version,
            patterns.iter().map(|p| {
                Arc::new(ChannelRecord {
                    id: uuid::Uuid::new_v4(),
                    pattern: ChannelPattern::parse(p).unwrap(),
                    description: None,
                    webhook_urls: None,
                    enabled: true,
                    created_at: Timestamp::now(),
                    updated_at: Timestamp::now(),
                })
            }),
        )
    }

    #[test]
    fn follows_table_versions() {
        let mut c = ResolveCache::default();
        let n = ChannelName::parse("a:1").unwrap();
        let t1 = table(1, &["a:*"]);
        assert!(c.resolve(&t1, &n).is_some());
        let t2 = table(2, &[]);
        assert!(
            c.resolve(&t2, &n).is_none(),
            "a new version must not serve stale entries"
        );
        let t3 = table(3, &["a:*"]);
        assert!(c.resolve(&t3, &n).is_some());
    }
}
