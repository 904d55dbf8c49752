-- Take or renew a lease: KEYS[1] lease, ARGV[1] owner, ARGV[2] ttl ms,
-- ARGV[3] "release" to give it up. Returns 1 if the caller holds it afterwards.
local holder = redis.call('GET', KEYS[1])
if ARGV[3] == 'release' then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
