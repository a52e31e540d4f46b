-- Take a lock, or join its queue.
--
-- KEYS[1] owner key: the holder's owner id, or "~" .. owner while a handed-over lock
--         waits to be claimed by that owner; expires with the lease (PX)
-- KEYS[2] fence key: the last token handed out (a max register, kept fence_keep ms)
-- KEYS[3] queue: sorted set of "client:owner" by arrival time (microseconds)
-- KEYS[4] liveness: hash client -> ms (server time) until which the client is alive
-- ARGV[1] owner id   ARGV[2] ttl ms
-- ARGV[3] "1" to join the queue when not granted, "0" to try once
-- ARGV[4] client id
-- ARGV[5] "1" fair (queued waiters first), "0" barging allowed
-- ARGV[6] queue lease ms   ARGV[7] fence keep ms
-- ARGV[8] waiters' channel, "%s" standing for the client id
-- ARGV[9] "1" to PUBLISH wake-ups on that channel, "2" to SPUBLISH them on the lock's own
--         channel (KEYS[1] without ":o", then ":c:" and the client id: same Cluster slot),
--         "0" to return them for the caller to publish
--
-- Returns {1, token} when granted, else {0, pttl of the owner key, rank in the queue or -1}
-- followed, when ARGV[9] is "0" and a waiter must be woken, by its channel and owner.
-- token = max(last token + 1, server time in microseconds): it rises even if the fence
-- key was lost, unless the server clock also went back.
local owner, client = ARGV[1], ARGV[4]
local member = client .. ':' .. owner
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local holder = redis.call('GET', KEYS[1])
local granted = false
local queued = true -- whether member may be in the queue (to remove it when granted)
local wake = nil
if holder == '~' .. owner then
  granted = true
  queued = false -- a handover removed it from the queue
elseif not holder then
  if ARGV[5] == '0' then
    granted = true
  else
    local purged = false
    for _ = 1, 1000 do
      local head = redis.call('ZRANGE', KEYS[3], 0, 0)
      if #head == 0 or head[1] == member then
        granted = true
        queued = #head > 0
        break
      end
      local head_client, head_owner = string.match(head[1], '^([^:]*):(.*)$')
      if tonumber(redis.call('HGET', KEYS[4], head_client) or '0') > now_ms then
        if purged then -- the live head may be asleep behind the dead ones: wake it
          if ARGV[9] == '2' then
            redis.call('SPUBLISH', string.sub(KEYS[1], 1, -3) .. ':c:' .. head_client, head_owner)
          elseif ARGV[9] == '1' then
            redis.call('PUBLISH', string.format(ARGV[8], head_client), head_owner)
          else
            wake = {string.format(ARGV[8], head_client), head_owner}
          end
        end
        break
      end
      redis.call('ZREM', KEYS[3], head[1]) -- its client stopped refreshing: gone
      purged = true
    end
  end
end
if granted then
  redis.call('SET', KEYS[1], owner, 'PX', ARGV[2])
  local token = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  if last >= token then
    token = last + 1
  end
  redis.call('SET', KEYS[2], string.format('%.0f', token), 'PX', ARGV[7])
  if queued then
    redis.call('ZREM', KEYS[3], member)
  end
  return {1, token}
end
if ARGV[3] == '1' then
  local lease = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[3], 'NX', string.format('%.0f', tonumber(time[1]) * 1000000 + tonumber(time[2])), member)
  redis.call('HSET', KEYS[4], client, now_ms + lease)
  redis.call('PEXPIRE', KEYS[3], lease * 2)
  redis.call('PEXPIRE', KEYS[4], lease * 2)
end
local rank = redis.call('ZRANK', KEYS[3], member)
if wake then
  return {0, redis.call('PTTL', KEYS[1]), rank or -1, wake[1], wake[2]}
end
return {0, redis.call('PTTL', KEYS[1]), rank or -1}
