-- The fence of a guarded resource: lockkit's acceptance rule (check_fence), in Lua.
-- Loaded in front of every guard script that changes something.
--
-- A resource is one hash (so one Cluster slot): value, version, token, owner, lock,
-- backend. Tokens travel as decimal strings and are compared as such: exact at any
-- size, where Lua's numbers (doubles) would round above 2^53.

local function compare_tokens(a, b)
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  if a == b then
    return 0
  end
  return a < b and -1 or 1
end

-- The refusal {0, fence token, fence owner, fence lock, fence backend} if the token (its
-- value, the acquisition that holds it, the lock and backend that minted it) is refused
-- for the resource at `key`, else nil; and the resource's version (0: no value yet).
-- Accepted iff there is no fence yet, or the token was minted for the fence's lock on
-- the fence's backend and is higher than the fence, or equal and of the same owner.
local function fence_refusal(key, token, owner, lock, backend)
  local fence = redis.call('HMGET', key, 'token', 'owner', 'lock', 'backend', 'version')
  local version = tonumber(fence[5] or '0')
  if not fence[1] then
    return nil, version
  end
  if fence[3] == lock and fence[4] == backend then
    local order = compare_tokens(token, fence[1])
    if order > 0 or (order == 0 and fence[2] == owner) then
      return nil, version
    end
  end
  return {0, fence[1], fence[2] or '', fence[3] or '', fence[4] or ''}, version
end

local function raise_fence(key, token, owner, lock, backend)
  redis.call('HSET', key, 'token', token, 'owner', owner, 'lock', lock, 'backend', backend)
end
