-- Claims several token index entries of one token shard for imports: each token goes
-- to its device only if no entry exists or the entry already names that device.
-- KEYS[1]: reg:{tok:<app>:<shard>}:idx
-- ARGV: pairs (token digest, new value = 10-byte claim stamp .. device id). Returns
-- the 1-based numbers of the pairs whose token another device holds; the caller takes
-- those through the one-by-one path (strip, then claim).
local contested = {}
for i = 1, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if current == false or string.sub(current, 11) == string.sub(ARGV[i + 1], 11) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  else
    contested[#contested + 1] = (i + 1) / 2
  end
end
return contested
