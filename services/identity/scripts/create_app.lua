-- Creates an app with its index entry and its create-request record, or answers a
-- replay, all at once so a retried CreateApp can never create two apps.
-- KEYS[1] app record, KEYS[2] app index, KEYS[3] create-request record
-- ARGV[1] app id, ARGV[2] request fingerprint, ARGV[3..] app record field/value pairs
-- Returns {outcome, app id}: outcome is created, replay, mismatch or exists.
local claimed = redis.call('GET', KEYS[3])
if claimed then
  local separator = string.find(claimed, '|', 1, true)
  if string.sub(claimed, 1, separator - 1) ~= ARGV[2] then
    return {'mismatch', ''}
  end
  return {'replay', string.sub(claimed, separator + 1)}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists', ''}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('SET', KEYS[3], ARGV[2] .. '|' .. ARGV[1])
return {'created', ARGV[1]}
