-- Shared by finish_attempts.lua and cancel_queued.lua: load_script puts this file before
-- each of them.
-- Outcome events are appended with an exact trim to MINID (no '~': an approximate trim
-- keeps whole macro nodes, so on small streams it deleted nothing and expiry could not be
-- told from retention). Before trimming, the newest id about to be deleted is kept (the
-- max) in the shard's watermark key: a StreamOutcomes cursor position older than the
-- watermark has lost outcomes it had not read (CURSOR_EXPIRED).
local function id_before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  if am ~= bm then return am < bm end
  return tonumber(as) < tonumber(bs)
end

local function keep_watermark(stream, watermark, minid)
  if tonumber(minid) <= 0 then return end
  -- The oldest entry first: when none is older than MINID (a stream younger than the
  -- retention, the usual case) XREVRANGE from below the oldest entry walks the whole
  -- stream (14.7 ms per call on 200,000 entries), this costs one entry.
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #oldest == 0 or not id_before(oldest[1][1], minid .. '-0') then return end
  local gone = redis.call('XREVRANGE', stream, '(' .. minid .. '-0', '-', 'COUNT', 1)
  if #gone > 0 then
    local newest = gone[1][1]
    local kept = redis.call('GET', watermark)
    if not kept or id_before(kept, newest) then
      redis.call('SET', watermark, newest)
    end
  end
end
