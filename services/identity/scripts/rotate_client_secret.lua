-- Moves the current client secret digest to "previous" (accepted until ARGV[3]) and
-- installs the new one, in one step: a concurrent VerifyClientSecret sees either the
-- old pair or the new pair, never a half-rotated app. The secret before the previous
-- one is dropped, so it stops working at once.
-- KEYS[1] app record
-- ARGV[1] new digest, ARGV[2] now (us), ARGV[3] previous secret expiry (us; 0 = none)
-- Returns 1, or 0 if the app does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if tonumber(ARGV[3]) > 0 then
  local current = redis.call('HGET', KEYS[1], 'sh')
  redis.call('HSET', KEYS[1], 'psh', current, 'pse', ARGV[3])
else
  redis.call('HDEL', KEYS[1], 'psh', 'pse')
end
redis.call('HSET', KEYS[1], 'sh', ARGV[1], 'sct', ARGV[2], 'ut', ARGV[2])
return 1
