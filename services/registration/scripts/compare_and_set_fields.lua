-- Compare-and-set (or compare-and-delete) of fields of one index hash: the token
-- index (confirming a claim, releasing a token) and the user index (releasing a
-- binding, read-time cleanup of a stale entry).
-- KEYS[1]: the hash. ARGV: triples (field, expected value, new value or "" to delete).
-- Each triple applies only if the field still holds exactly the expected value (with
-- its claim stamp): an entry a concurrent write claimed again since the caller read
-- it is left alone. Returns the 1-based numbers of the triples that did not apply.
local failed = {}
for i = 1, #ARGV, 3 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if current == ARGV[i + 1] then
    if ARGV[i + 2] == '' then
      redis.call('HDEL', KEYS[1], ARGV[i])
    else
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    end
  else
    failed[#failed + 1] = (i + 2) / 3
  end
end
return failed
