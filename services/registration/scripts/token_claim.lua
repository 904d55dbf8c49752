-- Hands a token index entry to a device, only if the entry is still exactly the value
-- the caller read (and, before this, stripped the token from the device it named).
-- KEYS[1]: one token index part  reg:{tok:<app>:<group>}:idx:<part>
-- ARGV[1]: the token's digest (field), ARGV[2]: the value read ("" = no entry),
-- ARGV[3]: the new value (a fresh pending claim: stamp .. compact device id).
-- Returns 1 when claimed, else the current value ("" when there is none). Comparing
-- the whole value (with its claim stamp), not just the device id, makes a claim fail
-- when the owner re-claimed or confirmed since the read: the caller decides again.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current == false then current = '' end
if current ~= ARGV[2] then
  return current
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
