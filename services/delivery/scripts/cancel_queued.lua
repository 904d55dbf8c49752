-- Cancels notifications that are still waiting (QUEUED or RETRYING, no worker's lease
-- running): outcome CANCELLED, complete time, and the outcome event. Workers skip a
-- cancelled item when its turn comes. In-flight ones are left to finish.
-- KEYS[1] outcomes stream, KEYS[2] outcomes watermark, KEYS[3..] records (one shard).
-- ARGV[1] now (ms), ARGV[2] outcomes MINID, ARGV[3] record ttl (s),
-- then per record: event bytes, app, campaign.
-- Appends an outcome event per cancelled item and trims the outcome stream exactly to
-- MINID, keeping the watermark first (outcome_watermark.lua, loaded before this).
local watermark_checked = false
local function add_outcome(stream, watermark, minid, event, app, campaign)
  if not watermark_checked then
    watermark_checked = true  -- the trim point is the same for every item of the call
    keep_watermark(stream, watermark, minid)
  end
  return redis.call('XADD', stream, 'MINID', minid, '*', 'e', event, 'app', app, 'c', campaign)
end
local now = tonumber(ARGV[1])
local cancelled = 0
for i = 3, #KEYS do
  local base = 4 + (i - 3) * 3
  local f = redis.call('HMGET', KEYS[i], 'o', 'lu')
  local waiting = f[1] == '1' or f[1] == '4'
  local leased = f[2] and tonumber(f[2]) > now
  if waiting and not leased then
    redis.call('HSET', KEYS[i], 'o', '6', 'r', 'CANCELLED', 'ct', ARGV[1], 'ut', ARGV[1])
    redis.call('EXPIRE', KEYS[i], ARGV[3])
    add_outcome(KEYS[1], KEYS[2], ARGV[2], ARGV[base], ARGV[base + 1], ARGV[base + 2])
    cancelled = cancelled + 1
  end
end
return cancelled
