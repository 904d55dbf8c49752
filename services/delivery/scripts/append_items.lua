-- Queues accepted notifications of one shard atomically (like the MULTI/EXEC it
-- replaces, in one command instead of five per item): each item's record, its list
-- indexes and its stream entry; an item is never queued without its record, nor
-- recorded without being queued. Touched indexes are trimmed to the record TTL.
-- KEYS[1] the shard's stream, then per item its record and its index keys (app, and
-- device / user / campaign when set), all with the shard's hash tag.
-- ARGV[1] now (ms), ARGV[2] record ttl (s), then per item: notification id,
-- notification bytes, how many index keys follow its record in KEYS.
local now, ttl = ARGV[1], tonumber(ARGV[2])
local oldest = tonumber(now) - ttl * 1000
local touched = {}
local k, a = 2, 3
while a <= #ARGV do
  local id, payload, indexes = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local record = KEYS[k]
  redis.call('HSET', record, 'n', payload, 'o', 1, 'cr', now)
  redis.call('EXPIRE', record, ttl)
  for i = 1, indexes do
    local index = KEYS[k + i]
    redis.call('ZADD', index, now, id)
    touched[index] = true
  end
  redis.call('XADD', KEYS[1], '*', 'i', id, 'a', 1, 'q', now)
  k = k + 1 + indexes
  a = a + 3
end
for index in pairs(touched) do
  redis.call('ZREMRANGEBYSCORE', index, '-inf', oldest)
  redis.call('EXPIRE', index, ttl)
end
return 0
