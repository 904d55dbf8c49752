-- Record a processed fan-out batch atomically for the lease holder: the stream
-- cursor, the counters, the recipients held for later, and the held recipients that
-- were just sent (removed). A crash before this script runs leaves the previous
-- cursor, so the batch is processed again (Delivery drops the duplicates by
-- idempotency key) and counted once.
-- The state is checked here, in the same step as the counting: a batch enqueued while
-- CancelCampaign ran is still counted (its notifications were handed to Delivery; the
-- CANCELLED outcomes of the ones Delivery drops move them to suppressed), instead of
-- being refused and left out of the report.
-- KEYS[1] campaign hash, KEYS[2] report hash, KEYS[3] held zset, KEYS[4] lease
-- ARGV[1] lease owner, ARGV[2] cursor ("-" keeps it), ARGV[3] "1" marks the audience
-- resolved, ARGV[4] n counter pairs, then n (field, delta), then m held adds, then m
-- (score, member), then k held removals, then k members.
-- Returns 1 (committed, still SENDING), 2 (counted, but the campaign was cancelled:
-- stop), or 0 (the lease is lost or the state allows nothing: not counted; the new
-- lease holder replays the batch).
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
if state == '5' then
  -- CANCELLED after this batch was enqueued. Cancel already counted every recipient
  -- held until then as suppressed CANCELLED and emptied `held`: newly held ones
  -- (delta > 0) are suppressed CANCELLED as well, and held ones released and counted
  -- in this batch (delta < 0) are taken back out of CANCELLED. Cursor and held set
  -- stay as they are: nothing resumes a cancelled campaign.
  local i = 4
  local n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    local name, delta = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
    local p = string.match(name, '^h:(%d+)$')
    if p then
      redis.call('HINCRBY', KEYS[2], 'suppressed', delta)
      redis.call('HINCRBY', KEYS[2], 'p' .. p .. ':suppressed', delta)
      redis.call('HINCRBY', KEYS[2], 's:CANCELLED', delta)
    else
      redis.call('HINCRBY', KEYS[2], name, delta)
    end
  end
  return 2
end
if state ~= '3' then return 0 end
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
