//! Server-side scripts. Each runs atomically on one shard (its keys share a cluster slot:
//! a hash tag, `keys`).

/// Lua shared by the scripts that trim a channel: `forget(log, head key, aud, whd, head)`
/// makes `head` the channel's first retained offset (never lower than the stored one). It
/// drops the stream entries whose messages are all before `head` and the counts (audience,
/// webhook deliveries) of offsets `old head..head`. With no head stored yet (a channel never
/// trimmed, or history from before head keys), the old head is the stream's first message:
/// entry `{last}-{n}` starts at `last - n + 1`, and an entry from before batching, `{o}-1`,
/// at `o`. An entry that straddles `head` stays whole until its last message is trimmed too;
/// history reads skip its messages before `head`.
macro_rules! forget_lua {
    () => {
        r#"
local function forget(log, headkey, aud, whd, head)
  local old = tonumber(redis.call('GET', headkey))
  if not old then
    local e = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
    old = head
    if e then
      local last, n = string.match(e[1], '^(%d+)-(%d+)$')
      if last then old = tonumber(last) - tonumber(n) + 1 end
    end
  end
  if old < 1 then old = 1 end
  if head <= old then return end
  redis.call('SET', headkey, head)
  redis.call('XTRIM', log, 'MINID', head .. '-0')
  for _, hash in ipairs({aud, whd}) do
    if redis.call('EXISTS', hash) == 1 then
      local from = old
      while from < head do
        local fields = {}
        for o = from, math.min(from + 999, head - 1) do fields[#fields + 1] = o end
        redis.call('HDEL', hash, unpack(fields))
        from = from + 1000
      end
    end
  end
end
"#
    };
}

/// Publish a batch of messages of one channel: assign the next offsets, append the batch to
/// the channel's stream as one entry (`entry`), trim to an exact count (`forget`) and fan the
/// whole batch out in one SPUBLISH (sharded pub/sub: the channel hashes to the same slot as
/// the keys), all at once, so history order is delivery order on every node.
/// KEYS: seq, log, aud, whd, head, source position. ARGV: maxlen, live channel, n, the entry
/// body (n records), the batch's frames (`live`), the change-stream position of its last
/// change (`SourcePos::to_key`, or empty: none; kept as the highest seen). The pub/sub payload
/// is the first offset, a space and the frames. Returns the first offset of the batch.
pub const PUBLISH: &str = concat!(
    forget_lua!(),
    r#"
local n = tonumber(ARGV[3])
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
redis.call('XADD', KEYS[2], last .. '-' .. n, 'r', ARGV[4])
local maxlen = tonumber(ARGV[1])
if last > maxlen then
  forget(KEYS[2], KEYS[5], KEYS[3], KEYS[4], last - maxlen + 1)
end
if ARGV[6] ~= '' then
  local cur = redis.call('GET', KEYS[6])
  if not cur or cur < ARGV[6] then redis.call('SET', KEYS[6], ARGV[6]) end
end
redis.call('SPUBLISH', ARGV[2], first .. ' ' .. ARGV[5])
return first
"#
);

/// A channel's position: its last offset and its epoch, made (ARGV[1]) if it has none.
/// KEYS: seq, epoch.
pub const POSITION: &str = r#"
redis.call('SET', KEYS[2], ARGV[1], 'NX')
return {redis.call('GET', KEYS[1]) or '0', redis.call('GET', KEYS[2])}
"#;

/// `PUBLISH` for a batch where some publishes carry an idempotency key: a message whose key is
/// already stored (a repeat within the window) is left out, and its first publish's
/// `<offset> <id> <timestamp>` returned instead; every other message is published as `PUBLISH`
/// does, and its key stored with the window as expiry. Decided here, atomically, so repeats
/// racing on several nodes publish once.
/// KEYS: seq, log, aud, whd, head, source position, then the idempotency keys (`keys::idempotency`).
/// ARGV: maxlen, live channel, n, source position (or empty), window (ms), then per message:
/// record JSON, frame prefix, its key's KEYS index (0: none), message id, timestamp.
/// Returns {first offset of the messages published (0: none), then per message '' (published)
/// or the first publish's value}.
pub const PUBLISH_IDEMPOTENT: &str = concat!(
    forget_lua!(),
    r#"
local n = tonumber(ARGV[3])
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local fresh = 0
local body, frames, out = {}, {}, {0}
for i = 0, n - 1 do
  local a = 6 + i * 5
  local k = tonumber(ARGV[a + 2])
  local seen = false
  if k > 0 then
    local v = redis.call('GET', KEYS[k])
    if v then
      out[i + 2] = v
      seen = true
    end
  end
  if not seen then
    fresh = fresh + 1
    if k > 0 then
      redis.call('SET', KEYS[k], (seq + fresh) .. ' ' .. ARGV[a + 3] .. ' ' .. ARGV[a + 4], 'PX', ARGV[5])
    end
    body[#body + 1] = #ARGV[a] .. ':' .. ARGV[a]
    frames[#frames + 1] = #ARGV[a + 1] .. ':' .. ARGV[a + 1]
    out[i + 2] = ''
  end
end
if fresh > 0 then
  local last = redis.call('INCRBY', KEYS[1], fresh)
  local first = last - fresh + 1
  redis.call('XADD', KEYS[2], last .. '-' .. fresh, 'r', table.concat(body))
  local maxlen = tonumber(ARGV[1])
  if last > maxlen then
    forget(KEYS[2], KEYS[5], KEYS[3], KEYS[4], last - maxlen + 1)
  end
  if ARGV[4] ~= '' then
    local cur = redis.call('GET', KEYS[6])
    if not cur or cur < ARGV[4] then redis.call('SET', KEYS[6], ARGV[4]) end
  end
  redis.call('SPUBLISH', ARGV[2], first .. ' ' .. table.concat(frames))
  out[1] = first
end
return out
"#
);

/// Retention by age of one channel. KEYS: log, head, aud, whd. ARGV: the first offset to
/// keep.
pub const TRIM_CHANNEL: &str = concat!(
    forget_lua!(),
    r#"
forget(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[1]))
return 1
"#
);

/// Adds to per-message counts (`aud`, `whd`), skipping messages already trimmed (before the
/// channel's head: a count that arrives after its message was trimmed would otherwise stay
/// forever; with no head stored, nothing was trimmed yet). KEYS: counts hash, head.
/// ARGV: offset, n, offset, n, ...
/// Returns the counts written.
pub const COUNT: &str = r#"
local head = tonumber(redis.call('GET', KEYS[2]) or '1')
local written = 0
for i = 1, #ARGV, 2 do
  if tonumber(ARGV[i]) >= head then
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
    written = written + 1
  end
end
return written
"#;

/// Append one batch to the all-channels index and keep the index to `max` messages: the
/// entry sizes are listed beside it (oldest first) with their total, and the oldest entries
/// go while the total is over (the list, not the total, says how many entries stay: a total
/// that drifted, e.g. a key evicted, is mended here). KEYS: index, sizes, total. ARGV: max, n, first offset, the
/// channel's entry body (`entry`). Returns the messages the index holds.
pub const INDEX: &str = r#"
local n = tonumber(ARGV[2])
redis.call('XADD', KEYS[1], '*', 'o', ARGV[3], 'r', ARGV[4])
local kept = redis.call('RPUSH', KEYS[2], n)
local total = redis.call('INCRBY', KEYS[3], n)
local max = tonumber(ARGV[1])
if total > max then
  -- The newest entry always stays (a batch may hold more than `max`).
  while total > max and kept > 1 do
    total = total - tonumber(redis.call('LPOP', KEYS[2]))
    kept = kept - 1
  end
  if kept == 1 then total = n end
  redis.call('SET', KEYS[3], total)
  redis.call('XTRIM', KEYS[1], 'MAXLEN', kept)
end
return total
"#;

/// Retention by age of the all-channels index (ids are arrival times). KEYS: index, sizes,
/// total. ARGV: the oldest time id to keep. Returns the entries dropped.
pub const TRIM_INDEX: &str = r#"
local removed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
if removed > 0 then
  local sizes = redis.call('LPOP', KEYS[2], removed)
  local gone = 0
  if sizes then
    for _, k in ipairs(sizes) do gone = gone + tonumber(k) end
  end
  if redis.call('DECRBY', KEYS[3], gone) < 0 then redis.call('SET', KEYS[3], 0) end
end
return removed
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

/// Save the policy set. KEYS: policies, version. ARGV: the set's JSON, events channel.
/// Returns the new version.
pub const SAVE_POLICIES: &str = r#"
redis.call('SET', KEYS[1], ARGV[1])
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[2], v)
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
