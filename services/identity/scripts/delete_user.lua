-- Deletes a user record and its shard index entry together.
-- KEYS[1] user record, KEYS[2] the user's shard index; ARGV[1] external id
-- Returns 1, or 0 if the user did not exist.
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
