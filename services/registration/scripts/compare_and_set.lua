-- Compare-and-set (or compare-and-delete) of hash fields, each only if the field still
-- holds exactly the value the caller read. The one write primitive of Registration's
-- hashes: device records (every write of a device; InvalidateTokens' compare-and-
-- remove), token index entries (confirming a claim, releasing a token) and user index
-- members (releasing a binding, read-time cleanup of a stale member).
-- KEYS: the hashes of one call, all in one slot (one device shard, the token index
-- parts of one hash tag, or one user's index).
-- ARGV[1]: quadruples (key number: one byte, 1-based into KEYS; field; expected value,
-- "" = absent; new value, "" = delete), each item a u32 big-endian length and its bytes
-- (store.packed_items: one argument instead of thousands is far cheaper for the client
-- to send).
-- A value computed from a stale read (a concurrent registration, an invalidation racing
-- a re-registration, an index entry claimed again since it was read, with its claim
-- stamp) is never written. Returns the 1-based numbers of the quadruples that did not
-- apply; the caller re-reads and decides again.
local items, at, size = {}, 1, #ARGV[1]
while at <= size do
  items[#items + 1], at = struct.unpack('>I4c0', ARGV[1], at)
end
local failed = {}
for i = 1, #items, 4 do
  local key = KEYS[string.byte(items[i])]
  local current = redis.call('HGET', key, items[i + 1])
  if current == false then current = '' end
  if current == items[i + 2] then
    if items[i + 3] == '' then
      redis.call('HDEL', key, items[i + 1])
    else
      redis.call('HSET', key, items[i + 1], items[i + 3])
    end
  else
    failed[#failed + 1] = (i + 3) / 4
  end
end
return failed
