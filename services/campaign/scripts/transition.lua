-- Move a campaign to a new state if its current state is one of the allowed ones.
-- KEYS[1] campaign hash, KEYS[2] report hash, KEYS[3] held zset
-- ARGV[1] allowed states ("2,3"), ARGV[2] new state ("" keeps it: a guarded update), ARGV[3] "1" to count the held
-- recipients as suppressed CANCELLED, ARGV[4..] field/value pairs to set with it.
-- Returns {1, old state} on success, {0, current state} otherwise ({0, ""}: no campaign).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, ''} end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == state then allowed = true end
end
if not allowed then return {0, state} end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[2]) end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if ARGV[3] == '1' then
  -- Recipients held for their local time or quiet hours will never be sent to.
  local total = 0
  for p = 1, 3 do
    local n = tonumber(redis.call('HGET', KEYS[2], 'h:' .. p) or '0')
    if n > 0 then
      redis.call('HINCRBY', KEYS[2], 'p' .. p .. ':suppressed', n)
      redis.call('HSET', KEYS[2], 'h:' .. p, 0)
      total = total + n
    end
  end
  if total > 0 then
    redis.call('HINCRBY', KEYS[2], 'suppressed', total)
    redis.call('HINCRBY', KEYS[2], 's:CANCELLED', total)
  end
  redis.call('DEL', KEYS[3])
end
return {1, state}
