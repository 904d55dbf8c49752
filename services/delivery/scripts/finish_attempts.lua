-- Records answered attempts of one shard and does everything that follows from each in
-- one step: the attempt and the new outcome on the record, the outcome event, the next
-- attempt in the retry schedule (if any), and the stream entry acknowledged and deleted.
-- A crash before this script runs means the item is redelivered and sent again (the one
-- window at-least-once allows); after it, a redelivery finds the attempt DONE. One call
-- records every attempt of the shard answered meanwhile (QueueStore batches them): one
-- round trip, not one per item.
-- KEYS[1] queue stream, KEYS[2] retry schedule (zset), KEYS[3] outcomes stream,
-- KEYS[4] outcomes watermark (string), KEYS[4 + i] the record of item i
-- ARGV[1] group, ARGV[2] outcomes MINID, ARGV[3] record ttl (s), ARGV[4] now (ms),
-- then 11 values per item i, from ARGV[5 + 11 * (i - 1)]: entry id ('' when not from the
-- stream), attempt, attempt bytes, outcome, outcome reason, complete time (ms, '0' if
-- not final), next due (ms, '0' if final), retry member, event bytes, app, campaign.
-- Returns how many attempts were recorded (the others were answered already or expired).
-- The outcome stream's trim and watermark: outcome_watermark.lua (loaded before this).
local minid = ARGV[2]
local watermark_checked = false
local function add_outcome(event, app, campaign)
  if not watermark_checked then
    watermark_checked = true  -- the trim point is the same for every item of the call
    keep_watermark(KEYS[3], KEYS[4], minid)
  end
  return redis.call('XADD', KEYS[3], 'MINID', minid, '*', 'e', event, 'app', app, 'c', campaign)
end
local group, ttl, now = ARGV[1], ARGV[3], ARGV[4]
local recorded = 0
for i = 1, #KEYS - 4 do
  local record = KEYS[4 + i]
  local a = 5 + 11 * (i - 1)
  local entry_id, attempt = ARGV[a], ARGV[a + 1]
  local done = redis.call('HGET', record, 'da')
  if redis.call('EXISTS', record) == 1 and not (done and tonumber(done) >= tonumber(attempt)) then
    redis.call('HSET', record, 'a:' .. attempt, ARGV[a + 2], 'o', ARGV[a + 3], 'r', ARGV[a + 4],
      'da', attempt, 'ut', now)
    redis.call('HDEL', record, 'lw', 'lu')
    if ARGV[a + 5] ~= '0' then
      redis.call('HSET', record, 'ct', ARGV[a + 5])
    end
    if ARGV[a + 6] ~= '0' then
      redis.call('ZADD', KEYS[2], ARGV[a + 6], ARGV[a + 7])
    end
    redis.call('EXPIRE', record, ttl)
    add_outcome(ARGV[a + 8], ARGV[a + 9], ARGV[a + 10])
    recorded = recorded + 1
  end
  if entry_id ~= '' then
    redis.call('XACK', KEYS[1], group, entry_id)
    redis.call('XDEL', KEYS[1], entry_id)
  end
end
return recorded
