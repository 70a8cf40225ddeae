//! Channels: validated names and patterns, the seed's channel record, and the immutable
//! resolution table (`ChannelTable`) that the control thread builds and pushes to every core.

mod cache;
mod name;
mod record;
mod table;

pub use cache::ResolveCache;
pub use name::{ChannelName, ChannelPattern, MAX_NAME_LEN, NameError};
pub use record::{ChannelRecord, CreateChannel, UpdateChannel, validate_webhook_urls};
pub use table::ChannelTable;
