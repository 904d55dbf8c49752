-- Creates or replaces one credential slot of an app, atomically.
-- KEYS[1] the slot hash, KEYS[2] the app's slot index (set), KEYS[3] the app's version counter
-- ARGV[1] slot name, ARGV[2] sealed secret, ARGV[3] kind, ARGV[4] public JSON, ARGV[5] now (s)
-- The version comes from a per-app counter that never goes back, so a sender holding
-- version N always sees a different number after a replace, even after delete + put.
-- Replacing clears last_error and the circuit: the new material gets a fresh start.
local version = redis.call('INCR', KEYS[3])
local created = redis.call('HGET', KEYS[1], 'create_time')
local replaced = 1
if not created then
  created = ARGV[5]
  replaced = 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'sealed', ARGV[2], 'kind', ARGV[3], 'public', ARGV[4],
  'version', version, 'create_time', created, 'update_time', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[1])
return {version, replaced, created}
