//! The server-side scripts that make each multi-step change atomic on every topology.
//!
//! Each script reads the record header at fixed offsets (see `codec`; Lua strings are
//! 1-based, so header bytes 1..7 are `string.sub(h, 2, 7)`). Scripts never build Lua from
//! input: ids and values arrive as `KEYS`/`ARGV`. Keys a script derives from an index entry
//! (`ARGV` prefix plus member) share the declared keys' hash tag, so they are in the same
//! Cluster slot.
//!
//! With the durable tier, every script that changes a session also appends what it did to
//! the outbox stream (a declared key: the one stream on standalone and Sentinel, the shard's
//! own, with the same hash tag, on Cluster), in the same atomic run: the field layout is
//! `outbox`'s, where a session is named by its id without the `sess_` prefix (its shard and
//! index member), whatever stream it is in. A bound of 0 keeps no outbox.

use std::sync::LazyLock;

use redis::Script;

/// Shared Lua: `u48(s, i)` reads the 48-bit big-endian number at 1-based offset `i` (exact:
/// Lua numbers are doubles), `live(h, now)` says whether the header `h` describes a session
/// live at `now`, `full(key, bound)` whether the outbox `key` holds `bound` entries,
/// `note(key, bound, fields...)` appends an entry to it (nothing when `bound` is 0),
/// `is_cold(m)` whether an index member stands for a cold session, `cold_live(score, now)`
/// whether a cold entry's score (its expiry) is after `now` (a missing score is not), and
/// `shard_of(prefix)` the shard of a key prefix ending in `{<shard>}` (what an index member is
/// put after to name its session in the outbox).
///
/// A cold session (the demoter took its record out, the durable tier holds it) keeps its
/// place in its user's index as `~` and its member (`~` is never in an id), scored with its
/// exact expiry in seconds (three decimals): the per-user cap counts it, revoke-all ends and
/// counts it, a login can replace it, and the index's expiry prune drops it when it expires.
const LIVE: &str = r"
local function u48(s, i)
  local a, b, c, d, e, f = string.byte(s, i, i + 5)
  return ((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + f
end
local function live(h, now)
  if string.len(h) < 19 then return false end
  return now < math.min(u48(h, 2) + u48(h, 8), u48(h, 14))
end
local function full(key, bound)
  return bound > 0 and redis.call('XLEN', key) >= bound
end
local function note(key, bound, ...)
  if bound > 0 then redis.call('XADD', key, '*', ...) end
end
local function is_cold(m)
  return string.byte(m, 1) == 126
end
local function cold_live(score, now)
  return score and tonumber(score) * 1000 > now
end
local function shard_of(prefix)
  return string.sub(prefix, -3, -2)
end
";

/// A script that may grow memory: with a shebang and no `allow-oom` flag, Redis refuses it
/// whole when `maxmemory` is reached, so a full Redis fails creates loudly (503) instead of
/// half-running them.
fn script(body: &str) -> Script {
    Script::new(&format!("#!lua\n{LIVE}{body}"))
}

/// A script that only removes data: it must keep working on a full Redis, where ending
/// sessions is what frees memory.
fn freeing_script(body: &str) -> Script {
    Script::new(&format!("#!lua flags=allow-oom\n{LIVE}{body}"))
}

/// Records activity. KEYS: record, outbox. ARGV: at (ms, decimal), at (48-bit header form),
/// outbox bound, the session id without its prefix. The new record goes to the outbox unless it is full (a touch only
/// ages `lastActivity`; it never refuses one).
/// Returns 2 if the session was live at `at` and an outbox entry was added, 1 if it was live,
/// else 0 (and writes nothing).
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local h = redis.call('GETRANGE', KEYS[1], 0, 18)
local at = tonumber(ARGV[1])
if not live(h, at) then return 0 end
if at > u48(h, 2) then
  local idle = u48(h, 8)
  local abs = u48(h, 14)
  redis.call('SETRANGE', KEYS[1], 1, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.min(at + idle, abs) - at))
  local bound = tonumber(ARGV[3])
  if bound > 0 and not full(KEYS[2], bound) then
    note(KEYS[2], bound, 'c', 'l', 'm', ARGV[4], 'r', redis.call('GET', KEYS[1]))
    return 2
  end
end
return 1
",
    )
});

/// Creates a session and indexes it, enforcing the per-user cap, and ends the session it
/// replaces if that one is live and the same user's.
/// KEYS: record, index, outbox, and (optional) the replaced session's record. ARGV: record
/// bytes, ttl ms, index score (absolute expiry, whole seconds rounded up), index member, now
/// ms, max per user (0: none), at-cap policy (`e` evict oldest, `r` reject), record key
/// prefix of this shard, now in whole seconds (rounded down: an entry scored at or below it
/// has expired), outbox bound, the event (JSON), tombstone key prefix of this shard,
/// tombstone ttl ms, and with a replaced session: its index member, the user id.
/// The replaced session is left out of the cap's count and ended only once the create is
/// sure to stand, so a refused create ends nothing. Cold sessions count and can be evicted
/// (first, as the idlest) or replaced like hot ones. The outbox gets the new record, then
/// one entry per session ended (evicted, replaced), each of which leaves a tombstone.
/// Returns {0} id taken, {2} at capacity, {3} outbox full, {1, replaced (0 or 1), evicted
/// ids...} created.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local bound = tonumber(ARGV[10])
if full(KEYS[3], bound) then return {3} end
local now = tonumber(ARGV[5])
local max = tonumber(ARGV[6])
local replaced = nil
-- The replaced session's index entry: its member, or its cold form.
local skip = nil
-- A user's first session (the usual login) has no index yet: nothing to prune or count.
local indexed = redis.call('EXISTS', KEYS[2]) == 1
if indexed then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[9]) end
if KEYS[4] and KEYS[4] ~= KEYS[1] then
  local uid = ARGV[15]
  local h = redis.call('GETRANGE', KEYS[4], 0, 64 + string.len(uid))
  if live(h, now) and string.len(h) == 65 + string.len(uid)
      and string.byte(h, 64) * 256 + string.byte(h, 65) == string.len(uid)
      and string.sub(h, 66) == uid then
    replaced, skip = ARGV[14], ARGV[14]
  elseif indexed and cold_live(redis.call('ZSCORE', KEYS[2], '~' .. ARGV[14]), now) then
    replaced, skip = ARGV[14], '~' .. ARGV[14]
  end
end
local result = {1, replaced and 1 or 0}
if indexed and max > 0 then
  -- Sort keys: a hot session's last activity (ms), a cold one's expiry (s, so below every
  -- hot key): cold sessions, the idlest, go first.
  local alive = {}
  local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    local m = entries[i]
    if m ~= skip then
      if is_cold(m) then
        if cold_live(entries[i + 1], now) then
          table.insert(alive, {tonumber(entries[i + 1]), m})
        else
          redis.call('ZREM', KEYS[2], m)
        end
      else
        local key = ARGV[8] .. m
        local h = redis.call('GETRANGE', key, 0, 18)
        if live(h, now) then
          table.insert(alive, {u48(h, 2), m})
        else
          redis.call('DEL', key)
          redis.call('ZREM', KEYS[2], m)
        end
      end
    end
  end
  if #alive >= max then
    if ARGV[7] == 'r' then return {2} end
    table.sort(alive, function(a, b)
      if a[1] == b[1] then return a[2] < b[2] end
      return a[1] < b[1]
    end)
    for i = 1, #alive - max + 1 do
      local m = alive[i][2]
      redis.call('ZREM', KEYS[2], m)
      if is_cold(m) then
        m = string.sub(m, 2)
      else
        redis.call('DEL', ARGV[8] .. m)
      end
      table.insert(result, m)
    end
  end
end
if replaced then
  if skip == replaced then redis.call('DEL', KEYS[4]) end
  redis.call('ZREM', KEYS[2], skip)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
local last = tonumber(ARGV[3])
if indexed then
  last = tonumber(redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2])
end
local ttl = math.max(1, last * 1000 - now)
redis.call('PEXPIRE', KEYS[2], string.format('%d', ttl))
local shard = shard_of(ARGV[8])
note(KEYS[3], bound, 'c', 'l', 'm', shard .. ARGV[4], 'r', ARGV[1], 'e', ARGV[11])
for i = 3, #result do
  note(KEYS[3], bound, 'c', 'x', 'm', shard .. result[i], 'e', ARGV[11], 'j', 'ev',
    'i', string.format('%d', i - 2))
  if bound > 0 then redis.call('SET', ARGV[12] .. result[i], '1', 'PX', ARGV[13]) end
end
if replaced then
  note(KEYS[3], bound, 'c', 'x', 'm', shard .. replaced, 'e', ARGV[11], 'j', 'rp',
    'i', string.format('%d', #result - 1))
  if bound > 0 then redis.call('SET', ARGV[12] .. replaced, '1', 'PX', ARGV[13]) end
end
return result
",
    )
});

/// Compare-and-set of `userData` on `version`. KEYS: record, outbox. ARGV: expected version,
/// now ms, new userData (stored form), new version (versions in the 48-bit header form),
/// outbox bound, the event (JSON), the session id without its prefix.
/// Returns {0} not found, {2, current version} mismatch, {3} outbox full, {1, new record}
/// updated.
pub(crate) static UPDATE_DATA: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local r = redis.call('GET', KEYS[1])
if not r or not live(r, tonumber(ARGV[2])) then return {0} end
local v = string.sub(r, 20, 25)
if v ~= ARGV[1] then return {2, v} end
local bound = tonumber(ARGV[5])
if full(KEYS[2], bound) then return {3} end
local ulen = string.byte(r, 64) * 256 + string.byte(r, 65)
local p = 66 + ulen
local dlen = ((string.byte(r, p) * 256 + string.byte(r, p + 1)) * 256
  + string.byte(r, p + 2)) * 256 + string.byte(r, p + 3)
local n = string.len(ARGV[3])
local len = string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
  math.floor(n / 256) % 256, n % 256)
local out = string.sub(r, 1, 19) .. ARGV[4] .. string.sub(r, 26, p - 1) .. len .. ARGV[3]
  .. string.sub(r, p + 4 + dlen)
redis.call('SET', KEYS[1], out, 'KEEPTTL')
note(KEYS[2], bound, 'c', 'l', 'm', ARGV[7], 'r', out, 'e', ARGV[6])
return {1, out}
",
    )
});

/// Compare-and-set of the secret hash. KEYS: record, outbox. ARGV: now ms, expected hash, new
/// hash, outbox bound, the event (JSON), the session id without its prefix. Recorded even in a full outbox: it ends the
/// old token. Returns {0} not found, {2} stale, {1, new record} rotated.
pub(crate) static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local h = redis.call('GETRANGE', KEYS[1], 0, 56)
if not live(h, tonumber(ARGV[1])) then return {0} end
if string.sub(h, 26, 57) ~= ARGV[2] then return {2} end
redis.call('SETRANGE', KEYS[1], 25, ARGV[3])
local r = redis.call('GET', KEYS[1])
note(KEYS[2], tonumber(ARGV[4]), 'c', 'l', 'm', ARGV[6], 'r', r, 'e', ARGV[5])
return {1, r}
",
    )
});

/// Deletes a session and its index entry. KEYS: record, outbox, tombstone. ARGV: now ms,
/// index key prefix of this shard, index member, outbox bound, the event (JSON; recorded only
/// when the session was live), tombstone ttl ms. With the outbox, the tombstone is left
/// whether or not a record was here (the session may be only in the durable tier).
/// Returns {0, ''} absent, {1, ''} removed (was expired), {2, user id} removed (was live).
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    freeing_script(
        r"
local bound = tonumber(ARGV[4])
if bound > 0 then redis.call('SET', KEYS[3], '1', 'PX', ARGV[6]) end
local r = redis.call('GET', KEYS[1])
if not r then return {0, ''} end
local ulen = string.byte(r, 64) * 256 + string.byte(r, 65)
local user = string.sub(r, 66, 65 + ulen)
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[2] .. user, ARGV[3])
if live(r, tonumber(ARGV[1])) then
  note(KEYS[2], bound, 'c', 'x', 'm', shard_of(ARGV[2]) .. ARGV[3], 'u', user, 'e', ARGV[5])
  return {2, user}
end
note(KEYS[2], bound, 'c', 'x', 'm', shard_of(ARGV[2]) .. ARGV[3], 'u', user)
return {1, ''}
",
    )
});

/// A user's stored records, pruning index entries whose record is gone. KEYS: index.
/// ARGV: now in whole seconds (rounded down), record key prefix of this shard.
/// Returns members and records in pairs (the caller filters by liveness); cold sessions are
/// the durable tier's to list.
pub(crate) static LIST_USER: LazyLock<Script> = LazyLock::new(|| {
    freeing_script(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if not is_cold(m) then
    local r = redis.call('GET', ARGV[2] .. m)
    if r then
      table.insert(out, m)
      table.insert(out, r)
    else
      redis.call('ZREM', KEYS[1], m)
    end
  end
end
return out
",
    )
});

/// Deletes up to a batch of a user's sessions. KEYS: index, outbox, the user's tombstone.
/// ARGV: now ms, record key prefix of this shard, index member to keep (or empty), batch
/// size, outbox bound, the event (JSON), live sessions removed by the earlier batches,
/// tombstone ttl ms. With the outbox, the user's tombstone (`now kept`) keeps a read-through
/// from writing back any session of the user created by then but the one kept. The last batch records the
/// event with the whole count and the end of the user's sessions; an earlier one records
/// the end of each session it removed.
/// Returns {live sessions removed, 1 if more remain else 0}.
pub(crate) static DELETE_USER: LazyLock<Script> = LazyLock::new(|| {
    freeing_script(
        r"
local now = tonumber(ARGV[1])
local batch = tonumber(ARGV[4])
if tonumber(ARGV[5]) > 0 then
  redis.call('SET', KEYS[3], ARGV[1] .. ' ' .. ARGV[3], 'PX', ARGV[8])
end
local removed = 0
local shard = shard_of(ARGV[2])
local gone = {}
local entries = redis.call('ZRANGE', KEYS[1], 0, batch, 'WITHSCORES')
for i = 1, #entries, 2 do
  local m = entries[i]
  if m ~= ARGV[3] and #gone < batch then
    redis.call('ZREM', KEYS[1], m)
    if is_cold(m) then
      if cold_live(entries[i + 1], now) then removed = removed + 1 end
      m = string.sub(m, 2)
    else
      local key = ARGV[2] .. m
      if live(redis.call('GETRANGE', key, 0, 18), now) then removed = removed + 1 end
      redis.call('DEL', key)
    end
    table.insert(gone, shard .. m)
  end
end
local left = redis.call('ZCARD', KEYS[1])
if ARGV[3] ~= '' and redis.call('ZSCORE', KEYS[1], ARGV[3]) then left = left - 1 end
local more = 0
if left > 0 then more = 1 end
local bound = tonumber(ARGV[5])
if more == 1 then
  for _, m in ipairs(gone) do note(KEYS[2], bound, 'c', 'x', 'm', m) end
else
  local kept = ''
  if ARGV[3] ~= '' then kept = shard .. ARGV[3] end
  note(KEYS[2], bound, 'c', 'u', 'm', table.concat(gone, ' '), 'k', kept, 'e', ARGV[6],
    'n', string.format('%d', tonumber(ARGV[7]) + removed))
end
return {removed, more}
",
    )
});

/// Writes back a session read from the durable tier. KEYS: record, index, the session's
/// tombstone, the user's tombstone. ARGV: record bytes, ttl ms, index score, index member,
/// the record's creation ms, the index's ttl ms (to the absolute expiry). Refuses (0) when a
/// record is here, the session has a tombstone, or a revoke-all of its user since its
/// creation has one (unless it kept this session); else writes it and indexes it as hot
/// (1), in place of its cold entry if the demoter left one.
pub(crate) static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local u = redis.call('GET', KEYS[4])
if u then
  local at, kept = string.match(u, '^(%d+) (.*)$')
  if at and tonumber(ARGV[5]) <= tonumber(at) and kept ~= ARGV[4] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZREM', KEYS[2], '~' .. ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[6]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
return 1
",
    )
});

/// Removes an idle session the durable tier holds (the demoter), leaving its cold index
/// entry. KEYS: record. ARGV: the header (57 bytes) of the record the tier holds, index key
/// prefix of this shard, index member, its expiry (the cold entry's score). The index keeps
/// its TTL, which already reaches the session's absolute expiry. Returns 1 removed, 0 absent, 2 kept (the stored header differs: a change the tier
/// does not have yet).
pub(crate) static DEMOTE: LazyLock<Script> = LazyLock::new(|| {
    freeing_script(
        r"
local r = redis.call('GET', KEYS[1])
if not r then return 0 end
if string.sub(r, 1, 57) ~= ARGV[1] then return 2 end
local ulen = string.byte(r, 64) * 256 + string.byte(r, 65)
local index = ARGV[2] .. string.sub(r, 66, 65 + ulen)
redis.call('DEL', KEYS[1])
if redis.call('ZREM', index, ARGV[3]) == 1 then
  redis.call('ZADD', index, ARGV[4], '~' .. ARGV[3])
end
return 1
",
    )
});

/// Records revoke-everyone once its walk is done. KEYS: the outbox (the first shard's on
/// Cluster). ARGV:
/// the event (JSON), the id of the marker entry written before the walk (or empty). The
/// marker (every session created by then ended, no event) is what a walk cut short leaves;
/// a finished one replaces it with the same change carrying its event.
pub(crate) static ALL_ENDED: LazyLock<Script> = LazyLock::new(|| {
    freeing_script(
        r"
redis.call('XADD', KEYS[1], '*', 'c', 'a', 'e', ARGV[1])
if ARGV[2] ~= '' then redis.call('XDEL', KEYS[1], ARGV[2]) end
return 1
",
    )
});

/// Takes or keeps the turn to ship the one outbox stream (standalone and Sentinel). KEYS: the
/// turn. ARGV: this process's id, how long to hold the turn (ms). Returns 1 if this process
/// holds it now, 0 if another does. It may run on a full Redis: shipping is what empties the
/// outbox there.
pub(crate) static SHIP_TURN: LazyLock<Script> = LazyLock::new(|| {
    freeing_script(
        r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

/// Records that a replica must reach an offset before any process reads from it again.
/// KEYS: the fence record. ARGV: the offset, the record's TTL in ms. Keeps the larger offset.
pub(crate) static FENCE: LazyLock<Script> = LazyLock::new(|| {
    freeing_script(
        r"
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
",
    )
});
