-- Delete a campaign and everything of it, unless it is SENDING (3).
-- KEYS[1] campaign hash, KEYS[2..] its other keys. Returns {1, state} or {0, state}.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, ''} end
if state == '3' then return {0, state} end
redis.call('DEL', unpack(KEYS))
return {1, state}
