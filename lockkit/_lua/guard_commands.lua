-- Run the caller's commands under the fence. (Prefixed by guard_fence.lua.)
--
-- KEYS[1] the resource's hash   KEYS[2...] the keys the commands touch (declared)
-- ARGV[1] token   ARGV[2] owner   ARGV[3] lock   ARGV[4] backend
-- ARGV[5] how many commands; then, for each, its number of words and the words
--
-- Returns {1, {reply of each command}} when accepted; {0, fence...} when refused (nothing
-- runs); {3, n, message} when command n failed: the fence was raised and the commands
-- before it stay applied (Redis does not undo a script), the ones after it did not run.
local key = KEYS[1]
local refused = fence_refusal(key, ARGV[1], ARGV[2], ARGV[3], ARGV[4])
if refused then
  return refused
end
-- raised first: a token that got to change anything is on record, even if a command fails
raise_fence(key, ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local replies = {}
local at = 6
for i = 1, tonumber(ARGV[5]) do
  local words = tonumber(ARGV[at])
  local reply = redis.pcall(unpack(ARGV, at + 1, at + words))
  if type(reply) == 'table' and reply.err then
    return {3, i, reply.err}
  end
  replies[i] = reply
  at = at + words + 1
end
return {1, replies}
