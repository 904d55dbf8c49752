-- Records one answered attempt and does everything that follows from it in one step:
-- the attempt and the new outcome on the record, the outcome event, the next attempt in
-- the retry schedule (if any), and the stream entry acknowledged and deleted. A crash
-- before this script runs means the item is redelivered and sent again (the one window
-- at-least-once allows); after it, a redelivery finds the attempt DONE.
-- KEYS[1] record, KEYS[2] queue stream, KEYS[3] retry schedule (zset), KEYS[4] outcomes stream
-- ARGV[1] group, ARGV[2] entry id ('' when not from the stream), ARGV[3] attempt,
-- ARGV[4] attempt bytes, ARGV[5] outcome, ARGV[6] outcome reason, ARGV[7] complete time
-- (ms, '0' if not final), ARGV[8] next due (ms, '0' if final), ARGV[9] retry member,
-- ARGV[10] event bytes, ARGV[11] app, ARGV[12] campaign, ARGV[13] outcomes MINID,
-- ARGV[14] record ttl (s), ARGV[15] now (ms)
local function ack()
  if ARGV[2] ~= '' then
    redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
    redis.call('XDEL', KEYS[2], ARGV[2])
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  ack()
  return 0
end
local done = redis.call('HGET', KEYS[1], 'da')
if done and tonumber(done) >= tonumber(ARGV[3]) then
  ack()
  return 0
end
redis.call('HSET', KEYS[1], 'a:' .. ARGV[3], ARGV[4], 'o', ARGV[5], 'r', ARGV[6],
  'da', ARGV[3], 'ut', ARGV[15])
redis.call('HDEL', KEYS[1], 'lw', 'lu')
if ARGV[7] ~= '0' then
  redis.call('HSET', KEYS[1], 'ct', ARGV[7])
end
if ARGV[8] ~= '0' then
  redis.call('ZADD', KEYS[3], ARGV[8], ARGV[9])
end
redis.call('EXPIRE', KEYS[1], ARGV[14])
redis.call('XADD', KEYS[4], 'MINID', '~', ARGV[13], '*', 'e', ARGV[10], 'app', ARGV[11], 'c', ARGV[12])
ack()
return 1
