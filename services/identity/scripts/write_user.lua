-- Replaces a user record and makes sure its shard index lists it, as one step, and
-- only if the record is still at the version the caller read (optimistic concurrency:
-- two concurrent updates of one user never lose each other's changes silently).
-- KEYS[1] user record, KEYS[2] the user's shard index
-- ARGV[1] external id, ARGV[2] expected version (0 = the user must not exist),
-- ARGV[3..] field/value pairs
-- Returns the new version, or 0 if the record changed meanwhile.
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if version ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', version + 1, unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return version + 1
