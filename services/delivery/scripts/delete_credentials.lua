-- Deletes one credential slot. KEYS as put_credentials.lua; ARGV[1] slot name.
-- Bumps the version counter so every process's cache notices the removal.
if redis.call('DEL', KEYS[1]) == 0 then
  return 0
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
return 1
