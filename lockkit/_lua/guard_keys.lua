-- Where the caller's commands keep their keys, so that they can be declared (and their
-- Cluster slot checked) before anything runs. Changes nothing.
--
-- KEYS[1] the resource's hash (only to run on the node that serves it)
-- ARGV[1] "info": ARGV[2...] command names. Returns, for each, false if Redis does not
--   know it, else {arity, first key, last key, step, 1 if its keys move (found per
--   call)}.
-- ARGV[1] "getkeys": ARGV[2...] one command's words. Returns its keys.
if ARGV[1] == 'getkeys' then
  local keys = redis.pcall('COMMAND', 'GETKEYS', unpack(ARGV, 2))
  if type(keys) == 'table' and keys.err then
    if string.find(keys.err, 'no key arguments', 1, true) then
      return {}
    end
    return keys
  end
  return keys
end
local infos = redis.call('COMMAND', 'INFO', unpack(ARGV, 2))
local out = {}
for i = 1, #ARGV - 1 do
  local info = infos[i]
  if not info then
    out[i] = false
  else
    local moving = 0
    for _, flag in ipairs(info[3]) do
      if flag == 'movablekeys' or (type(flag) == 'table' and flag.ok == 'movablekeys') then
        moving = 1
      end
    end
    if info[10] and #info[10] > 0 then
      moving = 1 -- a container (CLIENT, OBJECT, XINFO...): the subcommand decides
    end
    out[i] = {info[2], info[4], info[5], info[6], moving}
  end
end
return out
