-- Moves retries that are due from a shard's schedule back to its stream, atomically,
-- so any worker of any process picks them up and none is moved twice.
-- KEYS[1] retry schedule (zset of "<notification id>|<attempt>" by due time in ms),
-- KEYS[2] the shard's queue stream. ARGV[1] now (ms), ARGV[2] at most this many.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #due, 2 do
  local member = due[i]
  local sep = string.find(member, '|', 1, true)
  redis.call('XADD', KEYS[2], '*', 'i', string.sub(member, 1, sep - 1),
    'a', string.sub(member, sep + 1), 'q', due[i + 1])
  redis.call('ZREM', KEYS[1], member)
end
return #due / 2
