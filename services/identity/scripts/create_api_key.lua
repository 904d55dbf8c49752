-- Stores a new API key (record, digest index, the app's key list) only if its app
-- still exists, so a key can never outlive or precede its app.
-- KEYS[1] app record, KEYS[2] key record, KEYS[3] digest index, KEYS[4] app key list
-- ARGV[1] key id, ARGV[2] list member, ARGV[3..] key record field/value pairs
-- Returns 1, or 0 if the app does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('SET', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[2])
return 1
