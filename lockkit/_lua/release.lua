-- Release a lock (or leave its queue) and hand it to the oldest live waiter.
--
-- KEYS[1] owner key   KEYS[2] fence key (unused, declared for Cluster routing)
-- KEYS[3] queue       KEYS[4] liveness hash          (layouts: see acquire.lua)
-- ARGV[1] owner id
-- ARGV[2] "1" when this client has no other waiter on this lock (drop its liveness)
-- ARGV[3] client id   ARGV[4] claim window ms
-- ARGV[5] "1" fair: the next waiter gets the lock reserved ("~" .. owner) for the claim
--         window; "0": the lock is freed and the next waiter only woken
-- ARGV[6] channel of the next waiter's client, with "%s" where its client id goes
-- ARGV[7] "1" to PUBLISH the wake-up on that channel; "2" to SPUBLISH it on the lock's own
--         channel (KEYS[1] without ":o", then ":c:" and the client id); "0" to return it
--         for the caller to publish (a script's PUBLISH stays on its Cluster node)
--
-- Returns 0 if the caller neither held the lock nor had it reserved; otherwise 1, or
-- {channel, owner} when ARGV[7] is "0" and a waiter must be woken by the caller.
-- Leaving the queue is done either way.
local owner, client = ARGV[1], ARGV[3]
redis.call('ZREM', KEYS[3], client .. ':' .. owner)
if ARGV[2] == '1' then
  redis.call('HDEL', KEYS[4], client)
end
local holder = redis.call('GET', KEYS[1])
if holder ~= owner and holder ~= '~' .. owner then
  return 0
end
local now_ms = nil
for _ = 1, 1000 do
  local head = redis.call('ZRANGE', KEYS[3], 0, 0)
  if #head == 0 then
    break
  end
  if not now_ms then
    local time = redis.call('TIME')
    now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  end
  local next_client, next_owner = string.match(head[1], '^([^:]*):(.*)$')
  if tonumber(redis.call('HGET', KEYS[4], next_client) or '0') > now_ms then
    if ARGV[5] == '1' then
      redis.call('SET', KEYS[1], '~' .. next_owner, 'PX', ARGV[4])
      redis.call('ZREM', KEYS[3], head[1])
    else
      redis.call('DEL', KEYS[1])
    end
    if ARGV[7] == '2' then
      redis.call('SPUBLISH', string.sub(KEYS[1], 1, -3) .. ':c:' .. next_client, next_owner)
      return 1
    end
    local channel = string.format(ARGV[6], next_client)
    if ARGV[7] == '1' then
      redis.call('PUBLISH', channel, next_owner)
      return 1
    end
    return {channel, next_owner}
  end
  redis.call('ZREM', KEYS[3], head[1]) -- its client stopped refreshing: gone
end
redis.call('DEL', KEYS[1])
return 1
