//! Redis key and channel names. Everything about one ringcast channel shares the hash tag
//! `{name}`, so a publish script touches one cluster slot; the registry shares `{reg}`.
//! (Channel names cannot contain `{` or `}`: see `channel::name`.)

pub fn seq(name: &str) -> String {
    format!("rc:{{{name}}}:seq")
}

pub fn log(name: &str) -> String {
    format!("rc:{{{name}}}:log")
}

/// The channel's first retained offset (history before it is trimmed): moved by the publish
/// script (count) and the age pass (`scripts::forget_lua`).
pub fn head(name: &str) -> String {
    format!("rc:{{{name}}}:head")
}

/// Hash: offset -> subscribers the message reached (`wsAudienceCount`), summed over nodes.
pub fn audience(name: &str) -> String {
    format!("rc:{{{name}}}:aud")
}

/// Hash: offset -> webhook URLs that answered 2xx (`whDeliveredCount`).
pub fn wh_delivered(name: &str) -> String {
    format!("rc:{{{name}}}:whd")
}

/// The channel's epoch (`engine::ChannelPos`): made when first asked for, so it is new
/// whenever the channel's keys were lost with it.
pub fn epoch(name: &str) -> String {
    format!("rc:{{{name}}}:epoch")
}

/// One idempotency key of a publish to `name`, kept for the idempotency window: the value is
/// the first publish's `<offset> <message id> <timestamp>`.
pub fn idempotency(name: &str, key: &str) -> String {
    format!("rc:{{{name}}}:idem:{key}")
}

/// The database change stream's position (`SourcePos::to_key`) of the last change stored in
/// `name`, written by the publish script that stores it.
pub fn source_pos(name: &str) -> String {
    format!("rc:{{{name}}}:src")
}

/// The change stream's checkpoint for replication slot `slot`: the commit end LSN (hex) up to
/// which every change is stored; the stream resumes there.
pub fn cdc_checkpoint(slot: &str) -> String {
    format!("rc:{{cdc:{slot}}}:checkpoint")
}

/// The pub/sub channel a message of `name` is fanned out on.
pub fn live(name: &str) -> String {
    format!("rc:{{{name}}}:live")
}

/// The ringcast channel a pub/sub channel carries, if it is one of ours.
pub fn name_of_live(chan: &str) -> Option<&str> {
    chan.strip_prefix("rc:{")?.strip_suffix("}:live")
}

pub const CHANNELS: &str = "rc:{reg}:channels";
pub const PATTERNS: &str = "rc:{reg}:patterns";
pub const VERSION: &str = "rc:{reg}:version";
/// The policy set saved at run time (JSON: `control::policies::PoliciesDoc`), beside the
/// registry: it shares its version and announcements.
pub const POLICIES: &str = "rc:{reg}:policies";
/// Registry changes are announced here (the message is the new version).
pub const REGISTRY_EVENTS: &str = "rc:{reg}:events";
/// Every message of every channel, newest last: the index of `GET /messages` and stats
/// (one entry per publish batch: `entry`).
pub const MESSAGES: &str = "rc:messages";
/// The message count of each `MESSAGES` entry, oldest first, and their total: the index is
/// trimmed by messages, not entries (`scripts::INDEX`). The hash tag is `MESSAGES`'s name,
/// so all three share a cluster slot.
pub const INDEX_SIZES: &str = "{rc:messages}:sizes";
pub const INDEX_TOTAL: &str = "{rc:messages}:total";
/// Names of every channel that has history (for age retention).
pub const NAMES: &str = "rc:names";
/// Short lease: the node holding it runs the periodic retention pass.
pub const MAINTENANCE_LEASE: &str = "rc:maintenance";

#[cfg(test)]
mod tests {
    #[test]
    fn live_round_trip() {
        assert_eq!(super::live("order:1"), "rc:{order:1}:live");
        assert_eq!(super::name_of_live("rc:{order:1}:live"), Some("order:1"));
        assert_eq!(super::name_of_live("rc:{reg}:events"), None);
    }

    #[test]
    fn the_index_keys_share_a_slot() {
        // A key without braces hashes whole; `{rc:messages}:x` hashes "rc:messages".
        for k in [super::INDEX_SIZES, super::INDEX_TOTAL] {
            assert!(k.starts_with(&format!("{{{}}}", super::MESSAGES)), "{k}");
        }
    }
}
