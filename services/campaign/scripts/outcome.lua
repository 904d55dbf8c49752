-- Count final Delivery outcomes of one campaign, each once per notification
-- (StreamOutcomes is at-least-once). One call per campaign per outcome batch: every
-- key it touches carries the campaign's hash tag, so it runs on one Cluster slot.
-- KEYS[1] finals set, KEYS[2] report hash, KEYS[3] campaign hash.
-- ARGV[1] expiry ms of the finals set once the campaign is final (set on first touch
-- after completion, so a late outcome does not keep the set forever), then groups of
-- 4: notification id, counter (delivered, bounced, failed, cancelled), reason, platform.
-- Returns how many were counted now.
-- The counters are summed here and written once each per call (not per outcome).
local counted = 0
local deltas = {}
local function bump(field, n)
  deltas[field] = (deltas[field] or 0) + n
end
for i = 2, #ARGV, 4 do
  local id, counter, reason = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local p = 'p' .. ARGV[i + 3] .. ':'
  if redis.call('SADD', KEYS[1], id) == 1 then
    counted = counted + 1
    if counter == 'cancelled' then
      -- Dropped from Delivery's queue before sending: it was never sent after all.
      bump('sent', -1)
      bump(p .. 'sent', -1)
      bump('suppressed', 1)
      bump(p .. 'suppressed', 1)
      bump('s:CANCELLED', 1)
    else
      bump(counter, 1)
      bump(p .. counter, 1)
      if counter == 'bounced' then bump('b:' .. reason, 1) end
      if counter == 'failed' then bump('f:' .. reason, 1) end
    end
  end
end
for field, delta in pairs(deltas) do
  redis.call('HINCRBY', KEYS[2], field, delta)
end
if redis.call('HEXISTS', KEYS[3], 'complete') == 1 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return counted
