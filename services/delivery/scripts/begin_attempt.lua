-- Claims one attempt of a queued notification for a worker, so a redelivered or
-- reclaimed item is not sent twice: the attempt is refused when it was already
-- answered (DONE), when the notification was cancelled, and while another worker's
-- lease on it runs (BUSY; the lease expires if that worker died).
-- KEYS[1] the notification record (hash)
-- ARGV[1] worker id, ARGV[2] attempt number, ARGV[3] now (ms), ARGV[4] lease (ms)
-- Returns {status, notification bytes}: GO | DONE | BUSY | CANCELLED | GONE.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'GONE'}
end
local f = redis.call('HMGET', KEYS[1], 'o', 'da', 'lw', 'lu', 'n')
local attempt = tonumber(ARGV[2])
if f[1] == '6' then
  return {'CANCELLED'}
end
if f[2] and tonumber(f[2]) >= attempt then
  return {'DONE'}
end
if f[3] and f[3] ~= ARGV[1] and tonumber(f[4]) > tonumber(ARGV[3]) then
  return {'BUSY'}
end
redis.call('HSET', KEYS[1], 'lw', ARGV[1], 'lu', tonumber(ARGV[3]) + tonumber(ARGV[4]))
return {'GO', f[5]}
