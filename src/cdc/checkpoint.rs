//! Where the change stream remembers how far it got, so a restart (of the broker or of
//! PostgreSQL) resumes there instead of at the slot's `confirmed_flush_lsn`, which a database
//! crash can move backwards.
//!
//! Two positions are kept: the checkpoint (a commit end LSN: every change of every transaction
//! that ended at or before it is stored), and per `db:` channel the position of the last change
//! stored in it. The memory engine keeps them in this process (its history does not survive a
//! restart either). The redis engine keeps the checkpoint in `rc:{cdc:<slot>}:checkpoint` and
//! reads the per-channel positions that its publish script writes with every append
//! (`rc:{db:<table>}:src`), so a node that takes the slot over skips exactly what is stored.

use std::time::Duration;

use fred::prelude::*;

use crate::{
    channel::ChannelName,
    engine::{
        SourcePos,
        redis::{client_builder, keys},
    },
};

#[derive(Debug, thiserror::Error)]
#[error("checkpoint store: {0}")]
pub struct StoreError(String);

pub enum Store {
    Memory { checkpoint: Option<u64> },
    Redis { client: Client, slot: String },
}

impl Store {
    pub fn memory() -> Self {
        Self::Memory { checkpoint: None }
    }

    /// A store in the redis engine's Redis (connects lazily, reconnects forever).
    pub fn redis(url: &str, slot: &str) -> Result<Self, StoreError> {
        let client = client_builder(url, Duration::from_secs(5), |_| {})
            .and_then(|b| b.build())
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(Self::Redis {
            client,
            slot: slot.to_string(),
        })
    }

    /// Whether other nodes write here too (redis): then what this node remembers of the
    /// per-channel positions may be stale after another node read the slot.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Redis { .. })
    }

    /// Connects (redis); call once before the first read.
    pub async fn init(&self) -> Result<(), StoreError> {
        if let Self::Redis { client, .. } = self
            && !client.is_connected()
        {
            drop(client.init().await.map_err(|e| StoreError(e.to_string()))?);
        }
        Ok(())
    }

    /// The stored checkpoint (commit end LSN), if any.
    pub async fn load(&self) -> Result<Option<u64>, StoreError> {
        match self {
            Self::Memory { checkpoint } => Ok(*checkpoint),
            Self::Redis { client, slot } => {
                let v: Option<String> = client
                    .get(keys::cdc_checkpoint(slot))
                    .await
                    .map_err(|e| StoreError(e.to_string()))?;
                Ok(v.and_then(|s| u64::from_str_radix(&s, 16).ok()))
            }
        }
    }

    /// Records that every change up to `lsn` is stored.
    pub async fn save(&mut self, lsn: u64) -> Result<(), StoreError> {
        match self {
            Self::Memory { checkpoint } => {
                *checkpoint = Some(lsn);
                Ok(())
            }
            Self::Redis { client, slot } => {
                // Never backwards: a node that lost the slot may still be finishing a save.
                let _: Value = client
                    .eval(
                        "local c = redis.call('GET', KEYS[1]) \
                         if not c or #c < #ARGV[1] or (#c == #ARGV[1] and c < ARGV[1]) then \
                         redis.call('SET', KEYS[1], ARGV[1]) end return 1",
                        vec![keys::cdc_checkpoint(slot)],
                        vec![format!("{lsn:016x}")],
                    )
                    .await
                    .map_err(|e| StoreError(e.to_string()))?;
                Ok(())
            }
        }
    }

    /// The position of the last change stored in `ch` (redis engine; the memory engine's live
    /// in the stream's own map).
    pub async fn channel_pos(&self, ch: &ChannelName) -> Result<Option<SourcePos>, StoreError> {
        match self {
            Self::Memory { .. } => Ok(None),
            Self::Redis { client, .. } => {
                let v: Option<String> = client
                    .get(keys::source_pos(ch.as_str()))
                    .await
                    .map_err(|e| StoreError(e.to_string()))?;
                Ok(v.as_deref().and_then(SourcePos::from_key))
            }
        }
    }
}
