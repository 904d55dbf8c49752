-- Count a campaign push against a user's frequency cap, across campaigns.
-- KEYS[1] the user's send history (zset: member = campaign id, score = ms)
-- ARGV[1] now ms, ARGV[2] period ms, ARGV[3] max pushes, ARGV[4] campaign id,
-- ARGV[5] history retention ms.
-- Returns 1 if allowed (and recorded), 0 if capped. Several devices of the user in one
-- campaign count once: the campaign is already in the history.
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[5]))
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then return 1 end
local recent = redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[2]), '+inf')
if recent >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
