-- Writes fields of a hash only if it exists, so an update racing a delete never
-- resurrects a half record.
-- KEYS[1] the hash; ARGV field/value pairs. Returns 1, or 0 if the hash is absent.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
