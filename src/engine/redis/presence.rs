//! Presence shared by every node through Redis. Per channel (one hash tag, one slot):
//!
//! - `rc:{ch}:pres` (hash): member key -> the member's JSON (`presence::Member`);
//! - `rc:{ch}:presh` (hash): holder `<node id>|<member key>` -> expiry (ms, Redis clock): a
//!   node that has the member among its sockets;
//! - `rc:{ch}:presn` (hash): member key -> how many holders it has.
//!
//! A member joins when it gains its first holder and leaves when it loses its last; each
//! is announced once on the channel's pub/sub channel (`keys::live`, the one its messages
//! use) as `Pj <origin> <member JSON>` or `Pl - <member JSON>`, so every node with
//! subscribers hears it in order with the channel's messages. `<origin>` is
//! `<node>:<core>:<conn>` of the joining socket (it is not told of itself) or `-`.
//!
//! Each node refreshes its holders every `presence.heartbeat` (`BEAT`; a holder that was
//! reaped while the node was cut off is joined again by the control thread if it still holds
//! the member) and reaps expired ones, of any node, with leave events: the members of a node that died are gone within `presence.ttl` plus
//! one heartbeat of another node that has members in the channel (`MEMBERS`, the REST read,
//! reaps too).

use fred::{clients::Client, types::scripts::Script};

use super::keys;
use crate::{
    channel::ChannelName,
    engine::EngineError,
    presence::{Key, Member},
};

/// Lua shared by the scripts: `join(key, holder, json, origin)` and `leave(key, holder)` on
/// KEYS = (pres, presh, presn, live); `now` and `ttl` set by the caller.
const COMMON: &str = r#"
local pres, presh, presn, live = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function join(key, holder, json, origin, ttl)
  if redis.call('HSET', presh, holder, now + ttl) == 1 then
    if redis.call('HINCRBY', presn, key, 1) == 1 then
      redis.call('HSET', pres, key, json)
      redis.call('SPUBLISH', live, 'Pj ' .. origin .. ' ' .. json)
    end
  end
end
local function leave(key, holder)
  if redis.call('HDEL', presh, holder) == 1 then
    if redis.call('HINCRBY', presn, key, -1) <= 0 then
      redis.call('HDEL', presn, key)
      local m = redis.call('HGET', pres, key)
      redis.call('HDEL', pres, key)
      if m then redis.call('SPUBLISH', live, 'Pl - ' .. m) end
    end
  end
end
local function reap()
  local all = redis.call('HGETALL', presh)
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) < now then
      local key = string.match(all[i], '^[^|]*|(.*)$')
      if key then leave(key, all[i]) end
    end
  end
end
"#;

/// ARGV: key, holder, json, origin, ttl ms, counted (1: this node gains the member).
/// Returns the members.
const JOIN: &str = r#"
if ARGV[6] == '1' then join(ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])) end
return redis.call('HVALS', pres)
"#;

/// ARGV: key, holder.
const LEAVE: &str = r#"
leave(ARGV[1], ARGV[2])
return 1
"#;

/// ARGV: node, ttl ms, then the keys of this node's members of the channel. Refreshes the
/// holders that exist, reaps expired ones, and returns the keys whose holder is missing (it
/// expired while the node was cut off). It never adds a holder itself: the key list was taken
/// before the script ran, and a leave may have come in between (the control thread joins the
/// missing ones again after checking that it still holds them).
const BEAT: &str = r#"
local ttl = tonumber(ARGV[2])
local missing = {}
for i = 3, #ARGV do
  local holder = ARGV[1] .. '|' .. ARGV[i]
  if redis.call('HEXISTS', presh, holder) == 1 then
    redis.call('HSET', presh, holder, now + ttl)
  else
    missing[#missing + 1] = ARGV[i]
  end
end
reap()
return missing
"#;

/// Reaps, then returns the members.
const MEMBERS: &str = r#"
reap()
return redis.call('HVALS', pres)
"#;

fn script_keys(ch: &ChannelName) -> Vec<String> {
    let n = ch.as_str();
    vec![
        format!("rc:{{{n}}}:pres"),
        format!("rc:{{{n}}}:presh"),
        format!("rc:{{{n}}}:presn"),
        keys::live(n),
    ]
}

fn unavailable(e: fred::error::Error) -> EngineError {
    EngineError::Unavailable(e.to_string())
}

fn members_of(values: Vec<String>) -> Vec<Member> {
    values
        .iter()
        .filter_map(|v| serde_json::from_str(v).ok())
        .collect()
}

fn json(m: &Member) -> String {
    serde_json::to_string(m).expect("a member serializes")
}

/// What the control thread needs from Redis for presence (cheap to clone).
#[derive(Clone)]
pub struct PresenceStore {
    client: Client,
    node: String,
    ttl_ms: u64,
    scripts: std::sync::Arc<[Script; 4]>,
}

impl PresenceStore {
    pub fn new(client: Client, node: String, ttl: std::time::Duration) -> Self {
        let s = |body: &str| Script::from_lua(format!("{COMMON}{body}"));
        Self {
            client,
            node,
            ttl_ms: ttl.as_millis() as u64,
            scripts: std::sync::Arc::new([s(JOIN), s(LEAVE), s(BEAT), s(MEMBERS)]),
        }
    }

    async fn run<R: fred::types::FromValue>(
        &self,
        i: usize,
        ch: &ChannelName,
        args: Vec<String>,
    ) -> Result<R, EngineError> {
        self.scripts[i]
            .evalsha_with_reload(&self.client, script_keys(ch), args)
            .await
            .map_err(unavailable)
    }

    fn holder(&self, key: &str) -> String {
        format!("{}|{key}", self.node)
    }

    /// A socket joined; `counted`: this node gains the member. Returns the members.
    pub async fn join(
        &self,
        ch: &ChannelName,
        key: &Key,
        member: &Member,
        counted: bool,
        origin: &str,
    ) -> Result<Vec<Member>, EngineError> {
        let args = vec![
            key.to_string(),
            self.holder(key),
            json(member),
            origin.to_string(),
            self.ttl_ms.to_string(),
            if counted { "1" } else { "0" }.to_string(),
        ];
        Ok(members_of(self.run(0, ch, args).await?))
    }

    /// This node lost the member.
    pub async fn leave(&self, ch: &ChannelName, key: &Key) -> Result<(), EngineError> {
        let args = vec![key.to_string(), self.holder(key)];
        self.run::<i64>(1, ch, args).await.map(drop)
    }

    /// Refreshes this node's holders of `keys` in `ch` and reaps expired holders; returns
    /// the keys this node no longer holds in Redis (to join again if still held).
    pub async fn beat(&self, ch: &ChannelName, keys: &[Key]) -> Result<Vec<String>, EngineError> {
        let mut args = vec![self.node.clone(), self.ttl_ms.to_string()];
        args.extend(keys.iter().map(|k| k.to_string()));
        self.run(2, ch, args).await
    }

    /// Loads the scripts (so that the first calls need no reload, which could reorder a
    /// join and a leave sent back to back).
    pub async fn load(&self) -> Result<(), EngineError> {
        for s in self.scripts.iter() {
            s.load(&self.client).await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// The channel's members (expired holders reaped first).
    pub async fn members(&self, ch: &ChannelName) -> Result<Vec<Member>, EngineError> {
        Ok(members_of(self.run(3, ch, Vec::new()).await?))
    }
}

/// A presence announcement read from a channel's pub/sub channel.
#[derive(Debug, PartialEq, Eq)]
pub struct Announced {
    pub join: bool,
    /// `(node, core, conn)` of the joining socket.
    pub origin: Option<(String, usize, u64)>,
    pub member: Member,
}

/// Reads `Pj <origin> <json>` / `Pl - <json>`; `None` if `payload` is not one.
pub fn announced(payload: &[u8]) -> Option<Announced> {
    let s = std::str::from_utf8(payload).ok()?;
    let rest = s.strip_prefix('P')?;
    let (kind, rest) = rest.split_once(' ')?;
    let (origin, json) = rest.split_once(' ')?;
    let join = match kind {
        "j" => true,
        "l" => false,
        _ => return None,
    };
    let origin = (origin != "-").then(|| {
        let mut it = origin.rsplitn(3, ':');
        let conn = it.next()?.parse().ok()?;
        let core = it.next()?.parse().ok()?;
        Some((it.next()?.to_string(), core, conn))
    });
    Some(Announced {
        join,
        origin: origin.flatten(),
        member: serde_json::from_str(json).ok()?,
    })
}

/// `<node>:<core>:<conn>` of a joining socket.
pub fn origin(node: &str, core: usize, conn: u64) -> String {
    format!("{node}:{core}:{conn}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_announcements() {
        let (_, m) = Member::of(Some("u1"), "s");
        let j = format!("Pj {} {}", origin("node-a", 1, 42), json(&m));
        let a = announced(j.as_bytes()).unwrap();
        assert!(a.join);
        assert_eq!(a.origin, Some(("node-a".into(), 1, 42)));
        assert_eq!(a.member, m);
        let l = format!("Pl - {}", json(&m));
        let a = announced(l.as_bytes()).unwrap();
        assert!(!a.join && a.origin.is_none());
        assert!(announced(b"12 3:abc").is_none());
        assert!(announced(b"Px - {}").is_none());
        assert!(announced(b"Pj - not json").is_none());
    }
}
