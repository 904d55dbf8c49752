-- Deletes an app with everything Identity keeps for it: its record, its index entry,
-- its create-request record, its API key list and each key's record and digest index.
-- KEYS[1] app record, KEYS[2] app index, KEYS[3] create-request record (or the app
-- record again when there is none), KEYS[4] the app's API key list, KEYS[5..] API key
-- records and digest index entries.
-- ARGV[1] app id. Returns 1, or 0 if the app does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
for index = 3, #KEYS do
  redis.call('DEL', KEYS[index])
end
redis.call('DEL', KEYS[1])
return 1
