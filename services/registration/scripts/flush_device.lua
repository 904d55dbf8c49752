-- A session-start flush in one round trip: if the stored record already says what the
-- call says, only `last_seen` (and, when the call carries the token, `token confirm`)
-- change, so the script writes those two times in place; otherwise it writes nothing
-- and returns the record for the general path (domain.py: read, compute, CAS).
-- KEYS[1]: the shard's device hash  reg:{<app>:<shard>}:dev
-- ARGV: 1 the device's field (store.py: the compact device id), 2 platform,
-- 3 authorization status (0 = any), 4 APNs environment (0 = any), 5..9 os_version,
-- app_version, locale, time_zone, user_id ("" = any), 10 the record's token kind
-- byte for the call's token (0 = the call carries no token; FCM: 2 as text, 4
-- packed), 11 the token as the record stores it (record.stored_token),
-- 12 now (6 bytes, big-endian milliseconds).
-- Returns {1, new record} when it wrote, {0, stored record or ""} when it did not.
-- The record layout is record.py's version 2: 5 header bytes (version, platform,
-- status, environment, token kind), five u48 times (create, update, last seen, token
-- update, token confirm), five str8 texts, the str16 token.
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then
  return {0, ''}
end
if string.byte(rec, 1) ~= 2 or string.byte(rec, 2) ~= tonumber(ARGV[2]) then
  return {0, rec}
end
local status = tonumber(ARGV[3])
if status ~= 0 and string.byte(rec, 3) ~= status then
  return {0, rec}
end
local at = 36
for i = 5, 9 do
  local size = string.byte(rec, at)
  if ARGV[i] ~= '' and string.sub(rec, at + 1, at + size) ~= ARGV[i] then
    return {0, rec}
  end
  at = at + 1 + size
end
local kind = tonumber(ARGV[10])
local confirm = string.sub(rec, 30, 35)
if kind ~= 0 then
  local environment = tonumber(ARGV[4])
  if string.byte(rec, 5) ~= kind or (environment ~= 0 and string.byte(rec, 4) ~= environment) then
    return {0, rec}
  end
  local size = string.byte(rec, at) * 256 + string.byte(rec, at + 1)
  if string.sub(rec, at + 2, at + 1 + size) ~= ARGV[11] then
    return {0, rec}
  end
  confirm = ARGV[12]
end
local new = string.sub(rec, 1, 17) .. ARGV[12] .. string.sub(rec, 24, 29) .. confirm .. string.sub(rec, 36)
redis.call('HSET', KEYS[1], ARGV[1], new)
return {1, new}
