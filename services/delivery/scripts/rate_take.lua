-- A GCRA token bucket shared by every Delivery process: one send of an (app, provider).
-- With ARGV[3] > 0 the caller may wait: a slot up to that far ahead is reserved and the
-- wait returned; beyond it (or with 0, when the budget is out now) nothing is taken.
-- Redis's clock is used so processes on different hosts agree.
-- KEYS[1] the bucket (theoretical arrival time, ms). ARGV[1] emission interval (ms, float),
-- ARGV[2] burst, ARGV[3] longest acceptable wait (ms).
-- Returns {taken (1|0), wait ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local new_tat = tat + interval
local wait = new_tat - burst * interval - now
if wait < 0 then
  wait = 0
end
if wait > tonumber(ARGV[3]) then
  return {0, math.ceil(wait)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return {1, math.ceil(wait)}
