-- Records a configuration error (and the circuit's reopen time) on a slot, but only if
-- the slot still holds the version that failed: an error of the old material must not
-- mark freshly uploaded credentials as broken.
-- KEYS[1] the slot hash; ARGV[1] version, ARGV[2] reason, ARGV[3] time (s), ARGV[4] circuit_until (s)
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'last_error', ARGV[2], 'last_error_time', ARGV[3], 'circuit_until', ARGV[4])
return 1
