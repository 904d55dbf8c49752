-- Cancels notifications that are still waiting (QUEUED or RETRYING, no worker's lease
-- running): outcome CANCELLED, complete time, and the outcome event. Workers skip a
-- cancelled item when its turn comes. In-flight ones are left to finish.
-- KEYS[1] outcomes stream, KEYS[2..] records (one shard).
-- ARGV[1] now (ms), ARGV[2] outcomes MINID, ARGV[3] record ttl (s),
-- then per record: event bytes, app, campaign.
local now = tonumber(ARGV[1])
local cancelled = 0
for i = 2, #KEYS do
  local base = 4 + (i - 2) * 3
  local f = redis.call('HMGET', KEYS[i], 'o', 'lu')
  local waiting = f[1] == '1' or f[1] == '4'
  local leased = f[2] and tonumber(f[2]) > now
  if waiting and not leased then
    redis.call('HSET', KEYS[i], 'o', '6', 'r', 'CANCELLED', 'ct', ARGV[1], 'ut', ARGV[1])
    redis.call('EXPIRE', KEYS[i], ARGV[3])
    redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[2], '*', 'e', ARGV[base], 'app', ARGV[base + 1],
      'c', ARGV[base + 2])
    cancelled = cancelled + 1
  end
end
return cancelled
