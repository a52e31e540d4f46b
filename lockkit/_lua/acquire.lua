-- Take a lock, or join its queue. (Prefixed by _queue.lua: key layout, queue walk, wake.)
--
-- KEYS owner, fence, queue, liveness, holder record (optional)
-- ARGV[1] owner id   ARGV[2] ttl ms
-- ARGV[3] "1" to join the queue when not granted, "0" to try once
-- ARGV[4] client id
-- ARGV[5] fair mode (see _queue.lua): "1" or "2" queued waiters first, "0" barging
-- ARGV[6] queue lease ms   ARGV[7] fence keep ms
-- ARGV[8] waiters' channel, "%s" standing for the client id
-- ARGV[9] how to wake a waiter (see wake() in _queue.lua)
-- ARGV[10] optional (or ""): the token floor; when given, token = max(last + 1, floor)
--          and the server's TIME is not used for it (Redlock proposes one value to every
--          master)
-- ARGV[11] optional (or ""): the queue score (microseconds) instead of the server's TIME,
--          so that several masters order the same waiters the same way
-- ARGV[12] optional: the caller's owner record (JSON), stored with the holder (KEYS[5])
--          or the queue entry (in the liveness hash); its "l" field (the lease, ms) is
--          what a release in fair mode "2" grants this waiter
--
-- In fair mode "2" a waiter the lock was granted to outright gets {1, token, 1}.
--
-- Returns {1, token} when granted, else {0, pttl of the owner key, rank in the queue or -1,
-- the last token minted} followed, when ARGV[9] is "0" and a waiter must be woken, by its
-- channel and message. (A token a wake-up carried that is not above that last token was
-- granted before this answer and has been lost since.)
-- token = max(last token + 1, server time in microseconds): it rises even if the fence
-- key was lost, unless the server clock also went back.
local owner, client, record = ARGV[1], ARGV[4], ARGV[12]
local member = client .. ':' .. owner
local time = redis.call('TIME')
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local holder = redis.call('GET', KEYS[1])
local granted = false
local queued = true -- whether member may be in the queue (to remove it when granted)
local woken = nil
if holder == owner and ARGV[5] == '2' then
  -- granted outright by a release while this waiter was in line (its wake-up carried the
  -- token): this ask is its claim. The lease is counted again from now.
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('GET', KEYS[2]) or '0'), 1}
end
if holder == '~' .. owner then
  granted = true
  queued = false -- a handover removed it from the queue
elseif not holder then
  if ARGV[5] == '0' then
    granted = true
  else
    local head, head_client, head_owner =
      next_live_waiter(KEYS[3], KEYS[4], now_ms_of(time), member)
    if head == nil or head == member then
      granted = true
      queued = head ~= nil
    elseif head then
      -- the lock is free and its head has not taken it: the head may be asleep (behind
      -- dead entries just purged), or gone although its client lives (its leave was
      -- lost in a failover); wake it, and its client takes the entry out if it is gone
      woken = wake(ARGV[9], ARGV[8], head_client, head_owner)
    end
  end
end
if granted then
  redis.call('SET', KEYS[1], owner, 'PX', ARGV[2])
  local token = mint(now_us, ARGV[10], ARGV[7])
  if record then
    redis.call('SET', KEYS[5], owner .. '\n' .. record, 'PX', ARGV[7])
  end
  if queued then
    redis.call('ZREM', KEYS[3], member)
    redis.call('HDEL', KEYS[4], member)
  end
  return {1, token}
end
if ARGV[3] == '1' then
  local lease = tonumber(ARGV[6])
  local score = ARGV[11]
  if not score or score == '' then
    score = string.format('%.0f', now_us)
  end
  redis.call('ZADD', KEYS[3], 'NX', score, member)
  redis.call('HSET', KEYS[4], client, now_ms_of(time) + lease)
  if record then
    redis.call('HSETNX', KEYS[4], member, record)
  end
  redis.call('PEXPIRE', KEYS[3], lease * 2)
  redis.call('PEXPIRE', KEYS[4], lease * 2)
end
local rank = redis.call('ZRANK', KEYS[3], member)
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if woken then
  return {0, redis.call('PTTL', KEYS[1]), rank or -1, last, woken[1], woken[2]}
end
return {0, redis.call('PTTL', KEYS[1]), rank or -1, last}
