-- Deletes a string only if it still holds the value the caller saw, so releasing a
-- uniqueness reservation never releases someone else's.
-- KEYS[1] the key; ARGV[1] expected value. Returns 1 or 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
