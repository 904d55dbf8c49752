-- Count one final Delivery outcome once per notification (StreamOutcomes is
-- at-least-once). KEYS[1] finals set, KEYS[2] report hash.
-- ARGV[1] notification id, ARGV[2] counter (delivered, bounced, failed, cancelled),
-- ARGV[3] reason, ARGV[4] platform number. Returns 1 if counted now.
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
local p = 'p' .. ARGV[4] .. ':'
if ARGV[2] == 'cancelled' then
  -- Dropped from Delivery's queue before sending: it was never sent after all.
  redis.call('HINCRBY', KEYS[2], 'sent', -1)
  redis.call('HINCRBY', KEYS[2], p .. 'sent', -1)
  redis.call('HINCRBY', KEYS[2], 'suppressed', 1)
  redis.call('HINCRBY', KEYS[2], p .. 'suppressed', 1)
  redis.call('HINCRBY', KEYS[2], 's:CANCELLED', 1)
  return 1
end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('HINCRBY', KEYS[2], p .. ARGV[2], 1)
if ARGV[2] == 'bounced' then redis.call('HINCRBY', KEYS[2], 'b:' .. ARGV[3], 1) end
if ARGV[2] == 'failed' then redis.call('HINCRBY', KEYS[2], 'f:' .. ARGV[3], 1) end
return 1
