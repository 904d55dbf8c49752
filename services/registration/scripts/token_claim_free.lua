-- Claims several token index entries of one token shard for imports: each token goes
-- to its device only if no entry exists or the entry already names that device.
-- KEYS[1]: reg:{tok:<app>:<shard>}:idx
-- ARGV[1]: pairs (token digest, new value = 10-byte claim stamp .. device id), each
-- item a u32 big-endian length and its bytes (store.py packs them). Returns
-- the 1-based numbers of the pairs whose token another device holds; the caller takes
-- those through the one-by-one path (strip, then claim).
local items, at, size = {}, 1, #ARGV[1]
while at <= size do
  items[#items + 1], at = struct.unpack('>I4c0', ARGV[1], at)
end
local contested = {}
for i = 1, #items, 2 do
  local current = redis.call('HGET', KEYS[1], items[i])
  if current == false or string.sub(current, 11) == string.sub(items[i + 1], 11) then
    redis.call('HSET', KEYS[1], items[i], items[i + 1])
  else
    contested[#contested + 1] = (i + 1) / 2
  end
end
return contested
