//! Server-side scripts. Each runs atomically on one shard (its keys share a hash tag).

/// Publish: assign the next offset, append to the channel's stream (exact MAXLEN), and fan the
/// frame out (sharded pub/sub: the channel hashes to the same slot as the keys), all at once,
/// so history order is delivery order on every node.
/// KEYS: seq, log. ARGV: maxlen, record prefix, frame prefix, live channel.
/// The prefixes are JSON objects cut just after `"offset":`; the script appends the offset.
pub const PUBLISH: &str = r#"
local off = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], off .. '-1', 'r', ARGV[2] .. off .. '}')
redis.call('SPUBLISH', ARGV[4], ARGV[3] .. off .. '}')
return off
"#;

/// Create a channel unless its pattern is taken. KEYS: channels, patterns, version.
/// ARGV: id, pattern, record JSON, events channel. Returns the new version, or 0 if taken.
pub const CREATE: &str = r#"
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[4], v)
return v
"#;

/// Update a channel; a new pattern must not belong to another channel.
/// KEYS: channels, patterns, version. ARGV: id, old pattern, new pattern, JSON, events channel.
pub const UPDATE: &str = r#"
if ARGV[2] ~= ARGV[3] then
  local owner = redis.call('HGET', KEYS[2], ARGV[3])
  if owner and owner ~= ARGV[1] then return 0 end
  if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
local v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[5], v)
return v
"#;

/// Delete a channel. KEYS: channels, patterns, version. ARGV: id, pattern, events channel.
pub const DELETE: &str = r#"
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
local v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[3], v)
return v
"#;
