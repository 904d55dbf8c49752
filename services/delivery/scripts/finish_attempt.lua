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
-- ARGV[14] record ttl (s), ARGV[15] now (ms); KEYS[5] outcomes watermark (string)
-- Appends an outcome event and trims the outcome stream exactly to MINID (no '~': an
-- approximate trim keeps whole macro nodes, so on small streams it deleted nothing and
-- expiry could not be told from retention). Before trimming, the newest id about to be
-- deleted is kept (the max) in the shard's watermark key: a StreamOutcomes cursor
-- position older than the watermark has lost outcomes it had not read (CURSOR_EXPIRED).
local function id_before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  if am ~= bm then return am < bm end
  return tonumber(as) < tonumber(bs)
end
local function add_outcome(stream, watermark, minid, event, app, campaign)
  if tonumber(minid) > 0 then
    local gone = redis.call('XREVRANGE', stream, '(' .. minid .. '-0', '-', 'COUNT', 1)
    if #gone > 0 then
      local newest = gone[1][1]
      local kept = redis.call('GET', watermark)
      if not kept or id_before(kept, newest) then
        redis.call('SET', watermark, newest)
      end
    end
  end
  return redis.call('XADD', stream, 'MINID', minid, '*', 'e', event, 'app', app, 'c', campaign)
end
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
add_outcome(KEYS[4], KEYS[5], ARGV[13], ARGV[10], ARGV[11], ARGV[12])
ack()
return 1
