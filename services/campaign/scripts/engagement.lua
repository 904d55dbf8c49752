-- Record one engagement event of a campaign, once per event id.
-- KEYS[1] event ids set, KEYS[2] opened set, KEYS[3] dismissed set, KEYS[4] report,
-- KEYS[5] campaign hash.
-- ARGV[1] event id, ARGV[2] kind (opened, dismissed, conversion, received),
-- ARGV[3] notification id (or ""), ARGV[4] conversion event name ("" when it does not
-- count), ARGV[5] platform number ("0" unknown), ARGV[6] expiry ms of the dedupe sets
-- once the campaign is final: they must not stay forever (tens of MB per million
-- devices), and an event arriving after completion sets it on the set it recreates.
-- Returns 1 if recorded now, 0 for a duplicate.
local function expire_if_final()
  if redis.call('HEXISTS', KEYS[5], 'complete') == 0 then return end
  for k = 1, 3 do
    if redis.call('PTTL', KEYS[k]) == -1 then redis.call('PEXPIRE', KEYS[k], ARGV[6]) end
  end
end
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
local kind = ARGV[2]
local distinct = ARGV[3] ~= '' and ARGV[3] or ('event:' .. ARGV[1])
if kind == 'opened' then
  if redis.call('SADD', KEYS[2], distinct) == 1 then
    redis.call('HINCRBY', KEYS[4], 'opened', 1)
    if ARGV[5] ~= '0' then redis.call('HINCRBY', KEYS[4], 'p' .. ARGV[5] .. ':opened', 1) end
  end
elseif kind == 'dismissed' then
  if redis.call('SADD', KEYS[3], distinct) == 1 then
    redis.call('HINCRBY', KEYS[4], 'dismissed', 1)
  end
elseif kind == 'conversion' and ARGV[4] ~= '' then
  redis.call('HINCRBY', KEYS[4], 'conversions', 1)
  redis.call('HINCRBY', KEYS[4], 'c:' .. ARGV[4], 1)
elseif kind == 'received' then
  redis.call('HINCRBY', KEYS[4], 'received', 1)
end
expire_if_final()
return 1
