-- Write a guarded value, or only raise the fence. (Prefixed by guard_fence.lua.)
--
-- KEYS[1] the resource's hash
-- ARGV[1] token   ARGV[2] owner   ARGV[3] lock   ARGV[4] backend
-- ARGV[5] the version the caller read ("" for none: any version)
-- ARGV[6] the new value; absent to only raise the fence (check)
--
-- Returns {1, version now} when accepted; {0, fence...} when the token is refused (see
-- fence_refusal); {2, version now} when the version is not the expected one. A refusal
-- changes nothing, the fence included.
local key = KEYS[1]
local refused, version = fence_refusal(key, ARGV[1], ARGV[2], ARGV[3], ARGV[4])
if refused then
  return refused
end
if ARGV[5] ~= '' and tonumber(ARGV[5]) ~= version then
  return {2, version}
end
if #ARGV < 6 then
  raise_fence(key, ARGV[1], ARGV[2], ARGV[3], ARGV[4])
  return {1, version}
end
version = version + 1
redis.call('HSET', key, 'token', ARGV[1], 'owner', ARGV[2], 'lock', ARGV[3],
  'backend', ARGV[4], 'version', version, 'value', ARGV[6])
return {1, version}
