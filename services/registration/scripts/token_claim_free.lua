-- Claims several token index entries for imports: each token goes to its device only
-- if no entry exists or the entry already names that device.
-- KEYS: token index parts of one hash tag  reg:{tok:<app>:<group>}:idx:<part>
-- ARGV[1]: triples (key number: one byte, 1-based into KEYS; token digest (field); new
-- value = 10-byte claim stamp .. compact device id), each item a u32 big-endian length
-- and its bytes (store.py packs them). Device ids compare by their stored bytes, which
-- are equal exactly when the ids are (compact.py). Returns the 1-based numbers of the
-- triples whose token another device holds; the caller takes those through the
-- one-by-one path (strip, then claim).
local items, at, size = {}, 1, #ARGV[1]
while at <= size do
  items[#items + 1], at = struct.unpack('>I4c0', ARGV[1], at)
end
local contested = {}
for i = 1, #items, 3 do
  local key = KEYS[string.byte(items[i])]
  local current = redis.call('HGET', key, items[i + 1])
  if current == false or string.sub(current, 11) == string.sub(items[i + 2], 11) then
    redis.call('HSET', key, items[i + 1], items[i + 2])
  else
    contested[#contested + 1] = (i + 2) / 3
  end
end
return contested
