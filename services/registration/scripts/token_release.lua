-- Removes a token index entry only if it still points at the device that let the
-- token go (a newer owner's entry is left alone). KEYS[1]: reg:{tok:<app>:<shard>}:idx
-- ARGV[1]: the token's digest, ARGV[2]: the device id. Returns 1 if removed.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
