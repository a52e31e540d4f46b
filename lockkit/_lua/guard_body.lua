-- Run the caller's Lua body under the fence. (Prefixed by guard_fence.lua, then the
-- caller's body as `local function body(KEYS, ARGV) ... end`.)
--
-- KEYS[1] the resource's hash   KEYS[2...] the caller's keys
-- ARGV[1] token   ARGV[2] owner   ARGV[3] lock   ARGV[4] backend   ARGV[5...] the caller's
--
-- Returns {1, what the body returned} when accepted; {0, fence...} when refused (the body
-- does not run); {3, 0, message} when the body raised an error: the fence was raised and
-- what the body wrote before the error stays.
local key = KEYS[1]
local refused = fence_refusal(key, ARGV[1], ARGV[2], ARGV[3], ARGV[4])
if refused then
  return refused
end
raise_fence(key, ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local ok, result = pcall(body, {unpack(KEYS, 2)}, {unpack(ARGV, 5)})
if not ok then
  return {3, 0, type(result) == 'table' and result.err or tostring(result)}
end
if type(result) == 'table' and result.err then
  return {3, 0, result.err}
end
return {1, result}
