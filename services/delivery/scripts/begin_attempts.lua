-- Claims attempts of queued notifications for a worker, so a redelivered or reclaimed
-- item is not sent twice: an attempt is refused when it was already answered (DONE),
-- when the notification was cancelled, and while another worker's lease on it runs
-- (BUSY; the lease expires if that worker died). One call claims a whole read batch of
-- one shard (every key carries the shard's hash tag): one round trip, not one per item.
-- KEYS[i] the notification records (hashes)
-- ARGV[1] worker id, ARGV[2] now (ms), ARGV[3] lease (ms), ARGV[3 + i] attempt of KEYS[i]
-- Returns, per key, status then notification bytes ('' unless GO):
-- GO | DONE | BUSY | CANCELLED | GONE.
local out = {}
local now = tonumber(ARGV[2])
local lease_until = now + tonumber(ARGV[3])
for i, record in ipairs(KEYS) do
  local f = redis.call('HMGET', record, 'o', 'da', 'lw', 'lu', 'n')
  local attempt = tonumber(ARGV[3 + i])
  local status = 'GO'
  if not f[5] then
    status = 'GONE'  -- the record expired (every record holds its notification 'n')
  elseif f[1] == '6' then
    status = 'CANCELLED'
  elseif f[2] and tonumber(f[2]) >= attempt then
    status = 'DONE'
  elseif f[3] and f[3] ~= ARGV[1] and tonumber(f[4]) > now then
    status = 'BUSY'
  end
  out[#out + 1] = status
  if status == 'GO' then
    redis.call('HSET', record, 'lw', ARGV[1], 'lu', lease_until)
    out[#out + 1] = f[5]
  else
    out[#out + 1] = ''
  end
end
return out
