-- Compare-and-set (or compare-and-delete) of fields of one index hash: the token
-- index (confirming a claim, releasing a token) and the user index (releasing a
-- binding, read-time cleanup of a stale entry).
-- KEYS[1]: the hash. ARGV[1]: triples (field, expected value, new value or "" to
-- delete), each item a u32 big-endian length and its bytes (store.py packs them).
-- Each triple applies only if the field still holds exactly the expected value (with
-- its claim stamp): an entry a concurrent write claimed again since the caller read
-- it is left alone. Returns the 1-based numbers of the triples that did not apply.
local items, at, size = {}, 1, #ARGV[1]
while at <= size do
  items[#items + 1], at = struct.unpack('>I4c0', ARGV[1], at)
end
local failed = {}
for i = 1, #items, 3 do
  local current = redis.call('HGET', KEYS[1], items[i])
  if current == items[i + 1] then
    if items[i + 2] == '' then
      redis.call('HDEL', KEYS[1], items[i])
    else
      redis.call('HSET', KEYS[1], items[i], items[i + 2])
    end
  else
    failed[#failed + 1] = (i + 2) / 3
  end
end
return failed
