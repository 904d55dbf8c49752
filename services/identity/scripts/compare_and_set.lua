-- Sets a string only if it still holds the value the caller saw (a stale uniqueness
-- reservation is taken over only if nobody else took it over first).
-- KEYS[1] the key; ARGV[1] expected value, ARGV[2] new value. Returns 1 or 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
