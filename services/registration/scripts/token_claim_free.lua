-- Claims several token index entries of one token shard for imports: each token goes
-- to its device only if no other device holds it. KEYS[1]: reg:{tok:<app>:<shard>}:idx
-- ARGV: pairs (token digest, device id). Returns the 1-based numbers of the pairs whose
-- token another device holds; the caller strips it there first (the slow path).
local contested = {}
for i = 1, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if current == false or current == ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  else
    contested[#contested + 1] = (i + 1) / 2
  end
end
return contested
