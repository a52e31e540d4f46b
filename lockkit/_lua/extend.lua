-- Renew many leases at once.
--
-- KEYS[1..n] owner keys
-- ARGV[1..n] owner ids, ARGV[n+1..2n] ttl ms
--
-- Returns an array of n integers: 1 renewed, 0 the key does not name that owner.
local n = #KEYS
local result = {}
for i = 1, n do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    redis.call('PEXPIRE', KEYS[i], ARGV[n + i])
    result[i] = 1
  else
    result[i] = 0
  end
end
return result
