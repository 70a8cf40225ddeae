//! Server-side scripts. Each runs atomically on one shard (its keys share a hash tag).

/// Publish a batch of messages of one channel: assign the next offsets, append each to the
/// channel's stream, trim the stream to an exact length and fan the whole batch out in one
/// SPUBLISH (sharded pub/sub: the channel hashes to the same slot as the keys), all at once,
/// so history order is delivery order on every node.
/// The counts of the messages the trim removed (audience, webhook deliveries) go with them:
/// a stream holds consecutive offsets, so those are the `removed` offsets before the new head.
/// KEYS: seq, log, aud, whd. ARGV: maxlen, live channel, n, n records, the batch's frames
/// (`live`). Records are stored as given (with `"offset":0`: the entry id `{offset}-1`
/// carries it). The pub/sub payload is the first offset, a space and the frames (see `live`).
/// Returns the first offset of the batch.
pub const PUBLISH: &str = r#"
local n = tonumber(ARGV[3])
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
for i = 1, n do
  redis.call('XADD', KEYS[2], (first + i - 1) .. '-1', 'r', ARGV[3 + i])
end
local removed = redis.call('XTRIM', KEYS[2], 'MAXLEN', ARGV[1])
if removed > 0 then
  local head = first + n - tonumber(ARGV[1])
  for _, hash in ipairs({KEYS[3], KEYS[4]}) do
    if redis.call('EXISTS', hash) == 1 then
      local from = head - removed
      while from < head do
        local fields = {}
        for o = from, math.min(from + 999, head - 1) do fields[#fields + 1] = o end
        redis.call('HDEL', hash, unpack(fields))
        from = from + 1000
      end
    end
  end
end
redis.call('SPUBLISH', ARGV[2], first .. ' ' .. ARGV[4 + n])
return first
"#;

/// Adds to per-message counts (`aud`, `whd`), skipping messages no longer in the stream (a
/// count that arrives after its message was trimmed would otherwise stay forever).
/// KEYS: counts hash, log. ARGV: offset, n, offset, n, ... Returns the counts written.
pub const COUNT: &str = r#"
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
if not head then return 0 end
local first = tonumber(string.match(head[1], '^%d+'))
local written = 0
for i = 1, #ARGV, 2 do
  if tonumber(ARGV[i]) >= first then
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
    written = written + 1
  end
end
return written
"#;

/// Append records to the all-channels index. KEYS: index. ARGV: approximate MAXLEN, records.
/// (Specialized: a generic field list costs Lua ~1 µs more per entry. One trim per call, not
/// per entry: ~7 % less Redis time for this script, BENCHMARKS "Seventh session".)
pub const XADD_INDEX: &str = r#"
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'r', ARGV[i])
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])
return #ARGV - 1
"#;

/// Append many entries to one stream in one call (webhook deliveries). KEYS: stream.
/// ARGV: fields per entry k, then the entries' field/value pairs (2k values each).
pub const XADD_MANY: &str = r#"
local k = tonumber(ARGV[1]) * 2
local n = 0
for i = 2, #ARGV, k do
  local entry = {}
  for j = 0, k - 1 do entry[j + 1] = ARGV[i + j] end
  redis.call('XADD', KEYS[1], '*', unpack(entry))
  n = n + 1
end
return n
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
