-- Hands a token index entry to a device, only if its owner is still the one the caller
-- saw (and, before this, stripped the token from). KEYS[1]: reg:{tok:<app>:<shard>}:idx
-- ARGV[1]: the token's digest (field), ARGV[2]: the expected owner ("" = none),
-- ARGV[3]: the new owner device id. Returns 1 when claimed, else the current owner.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current == false then current = '' end
if current ~= ARGV[2] then
  return current
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
