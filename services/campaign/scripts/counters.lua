-- Add deltas to a campaign's report counters in one step (readers never see half).
-- KEYS[1] report hash. ARGV: field, delta pairs.
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], tonumber(ARGV[i + 1]))
end
return 1
