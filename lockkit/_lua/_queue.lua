-- The prelude of acquire.lua and release.lua: the FIFO rule, written once.
--
-- A lock's keys are KEYS[1] owner, KEYS[2] fence, KEYS[3] queue, KEYS[4] liveness,
-- KEYS[5] holder record:
--   owner    the holder's owner id, or "~" .. owner while a handed-over lock waits to be
--            claimed by that owner; expires with the lease (PX)
--   fence    the last token handed out (a max register, kept fence_keep ms)
--   queue    sorted set of "client:owner" by arrival time (microseconds)
--   liveness hash client -> ms (server time) until which the client is alive, and
--            "client:owner" -> that waiter's owner record (who it is, for operators)
--   record   owner id .. "\n" .. the owner record of the last holder granted (kept
--            fence_keep ms; it describes the holder only while the owner key names it)
-- A client that stops refreshing its liveness is dead: its queue entries are skipped.
--
-- Fair modes (the "fair" argument of the scripts): "0" barging allowed; "1" a release
-- reserves the lock for the next waiter ("~" .. owner), which claims it; "2" a release
-- grants it to the next waiter outright (owner key, token and holder record set for it,
-- from the lease its queue entry carries) and the wake-up carries the token: no claim.

local function now_ms_of(time)
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- The oldest live waiter, purging dead ones ahead of it from the queue.
-- Returns nil when the queue is empty, false when it holds only dead entries past the
-- walk's bound, else the head's member, client and owner.
-- `now_ms` may be nil: the server's TIME is then read only if there is a head to judge.
-- A head equal to `me` counts as live (the caller judges itself).
local function next_live_waiter(queue, liveness, now_ms, me)
  for _ = 1, 1000 do
    local head = redis.call('ZRANGE', queue, 0, 0)
    if #head == 0 then
      return nil, nil, nil
    end
    local client, owner = string.match(head[1], '^([^:]*):(.*)$')
    if head[1] == me then
      return head[1], client, owner
    end
    now_ms = now_ms or now_ms_of(redis.call('TIME'))
    if tonumber(redis.call('HGET', liveness, client) or '0') > now_ms then
      return head[1], client, owner
    end
    redis.call('ZREM', queue, head[1]) -- its client stopped refreshing: gone
    redis.call('HDEL', liveness, head[1])
  end
  return false, nil, nil
end

-- Wake a waiter of `client` with `message` (its owner id, then " " and its token when
-- the lock was granted to it outright) in the way `kind` says:
--   "1" PUBLISH on the client's channel (`channel_format`, "%s" standing for the client)
--   "2" SPUBLISH on the lock's own channel for that client (in the lock's Cluster slot)
--   "0" return {channel, message} for the caller to publish (a script's PUBLISH stays on
--       its Cluster node)
local function wake(kind, channel_format, client, message)
  if kind == '2' then
    redis.call('SPUBLISH', string.sub(KEYS[1], 1, -3) .. ':c:' .. client, message)
    return nil
  end
  local channel = string.format(channel_format, client)
  if kind == '1' then
    redis.call('PUBLISH', channel, message)
    return nil
  end
  return {channel, message}
end

-- Mint the next token into the fence key and return it: max(last + 1, `floor`, or the
-- server's time in microseconds when there is no floor).
local function mint(now_us, floor, keep_ms)
  local token = tonumber(floor or '') or now_us
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  if last >= token then
    token = last + 1
  end
  redis.call('SET', KEYS[2], string.format('%.0f', token), 'PX', keep_ms)
  return token
end

-- Hand the lock to queue entry `head` (`client`:`owner`), taking it out of the queue:
-- granted outright in fair mode "2" when the entry's record carries its lease ("l", ms),
-- else reserved for the claim window. Returns what wake() returns.
local function hand_over(head, client, owner, mode, claim_ms, keep_ms, kind, channel_format)
  local record = redis.call('HGET', KEYS[4], head)
  redis.call('ZREM', KEYS[3], head)
  redis.call('HDEL', KEYS[4], head)
  local lease = mode == '2' and record and tonumber(string.match(record, '"l":(%d+)'))
  if lease then
    redis.call('SET', KEYS[1], owner, 'PX', lease)
    local time = redis.call('TIME')
    local token = mint(tonumber(time[1]) * 1000000 + tonumber(time[2]), nil, keep_ms)
    if KEYS[5] then
      redis.call('SET', KEYS[5], owner .. '\n' .. record, 'PX', keep_ms)
    end
    return wake(kind, channel_format, client, owner .. ' ' .. string.format('%.0f', token))
  end
  redis.call('SET', KEYS[1], '~' .. owner, 'PX', claim_ms)
  return wake(kind, channel_format, client, owner)
end

