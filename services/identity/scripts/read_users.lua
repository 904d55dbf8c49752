-- Reads several user records of one shard in one call (BatchGetUsers): the same fields
-- of each record. All KEYS share the shard's hash tag {users:<shard>}, so one slot.
-- KEYS: the user records. ARGV: the record fields to read.
-- Returns, in KEYS order, one array of values per record (nil where a field is absent;
-- every field nil when the record does not exist).
local found = {}
for i, key in ipairs(KEYS) do
  found[i] = redis.call('HMGET', key, unpack(ARGV))
end
return found
