-- Redlock's write-back: raise one master's token register to the quorum's maximum.
--
-- KEYS[1] fence (the last token handed out)   KEYS[2] owner
-- ARGV[1] the token   ARGV[2] fence keep ms   ARGV[3] the owner id of the acquisition
--
-- The register only ever goes up: a lower or equal token leaves it as it is.
-- Returns 1 if the master still names ARGV[3] as the holder (it counts towards the
-- quorum that carries the token), 0 otherwise.
local token = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if token > last then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if redis.call('GET', KEYS[2]) == ARGV[3] then
  return 1
end
return 0
