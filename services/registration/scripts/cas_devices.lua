-- Compare-and-set of device records in one shard (one hash, one slot).
-- KEYS[1]: the shard's device hash  reg:{<app>:<shard>}:dev
-- ARGV[1]: triples (device_id, expected record or "" for absent, new record or "" to
-- delete), each item a u32 big-endian length and its bytes (store.py packs them: one
-- argument instead of thousands is far cheaper for the client to send)
-- Each triple applies only if the stored record is still the one the caller read, so a
-- record computed from a stale read (a concurrent registration, an invalidation racing
-- a re-registration) is never written. Returns the 1-based numbers of the triples that
-- did not apply; the caller re-reads and retries those.
local items, at, size = {}, 1, #ARGV[1]
while at <= size do
  items[#items + 1], at = struct.unpack('>I4c0', ARGV[1], at)
end
local conflicts = {}
for i = 1, #items, 3 do
  local current = redis.call('HGET', KEYS[1], items[i])
  if current == false then current = '' end
  if current == items[i + 1] then
    if items[i + 2] == '' then
      redis.call('HDEL', KEYS[1], items[i])
    else
      redis.call('HSET', KEYS[1], items[i], items[i + 2])
    end
  else
    conflicts[#conflicts + 1] = (i + 2) / 3
  end
end
return conflicts
