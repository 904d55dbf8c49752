-- Record a processed fan-out batch atomically, only for the lease holder of a SENDING
-- campaign: the stream cursor, the counters, the recipients held for later, and the
-- held recipients that were just sent (removed). A crash before this script runs
-- leaves the previous cursor, so the batch is processed again (Delivery drops the
-- duplicates by idempotency key) and counted once.
-- KEYS[1] campaign hash, KEYS[2] report hash, KEYS[3] held zset, KEYS[4] lease
-- ARGV[1] lease owner, ARGV[2] cursor ("-" keeps it), ARGV[3] "1" marks the audience
-- resolved, ARGV[4] n counter pairs, then n (field, delta), then m held adds, then m
-- (score, member), then k held removals, then k members.
-- Returns 1, or 0 when the lease or the state no longer allows it.
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= '3' then return 0 end
if ARGV[2] ~= '-' then redis.call('HSET', KEYS[1], 'cursor', ARGV[2]) end
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'resolved', '1') end
local i = 4
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HINCRBY', KEYS[2], ARGV[i], tonumber(ARGV[i + 1])); i = i + 2
end
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  redis.call('ZADD', KEYS[3], ARGV[i], ARGV[i + 1]); i = i + 2
end
local k = tonumber(ARGV[i]); i = i + 1
for _ = 1, k do
  redis.call('ZREM', KEYS[3], ARGV[i]); i = i + 1
end
return 1
