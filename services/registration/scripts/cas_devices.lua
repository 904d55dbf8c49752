-- Compare-and-set of device records in one shard (one hash, one slot).
-- KEYS[1]: the shard's device hash  reg:{<app>:<shard>}:dev
-- ARGV: triples (device_id, expected record or "" for absent, new record or "" to delete)
-- Each triple applies only if the stored record is still the one the caller read, so a
-- record computed from a stale read (a concurrent registration, an invalidation racing
-- a re-registration) is never written. Returns the 1-based numbers of the triples that
-- did not apply; the caller re-reads and retries those.
local conflicts = {}
for i = 1, #ARGV, 3 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if current == false then current = '' end
  if current == ARGV[i + 1] then
    if ARGV[i + 2] == '' then
      redis.call('HDEL', KEYS[1], ARGV[i])
    else
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    end
  else
    conflicts[#conflicts + 1] = (i + 2) / 3
  end
end
return conflicts
