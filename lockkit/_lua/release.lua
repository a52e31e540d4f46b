-- Release a lock (or leave its queue) and hand it to the oldest live waiter.
-- (Prefixed by _queue.lua: key layout, queue walk, wake.)
--
-- KEYS owner, fence (unused, declared for Cluster routing), queue, liveness, holder
-- record (optional)
-- ARGV[1] owner id
-- ARGV[2] "1" when this client has no other waiter on this lock (drop its liveness)
-- ARGV[3] client id   ARGV[4] claim window ms
-- ARGV[5] fair mode (see _queue.lua): "2" the next waiter is granted the lock, "1" it
--         gets it reserved ("~" .. owner) for the claim window; "0": the lock is freed
--         and the next waiter only woken
-- ARGV[6] channel of the next waiter's client, with "%s" where its client id goes
-- ARGV[7] how to wake the next waiter (see wake() in _queue.lua)
-- ARGV[8] fence keep ms (fair mode "2": the grant mints a token)
--
-- Returns 0 if the caller neither held the lock nor had it reserved; otherwise 1, or
-- {channel, owner} when ARGV[7] is "0" and a waiter must be woken by the caller.
-- Leaving the queue is done either way.
local owner, client = ARGV[1], ARGV[3]
if redis.call('ZREM', KEYS[3], client .. ':' .. owner) == 1 then
  redis.call('HDEL', KEYS[4], client .. ':' .. owner) -- its owner record
end
if ARGV[2] == '1' then
  redis.call('HDEL', KEYS[4], client)
end
local holder = redis.call('GET', KEYS[1])
if holder ~= owner and holder ~= '~' .. owner then
  return 0
end
if KEYS[5] then
  redis.call('DEL', KEYS[5])
end
local head, next_client, next_owner = next_live_waiter(KEYS[3], KEYS[4], nil, nil)
if not head then
  redis.call('DEL', KEYS[1])
  return 1
end
if ARGV[5] == '0' then
  redis.call('DEL', KEYS[1])
  return wake(ARGV[7], ARGV[6], next_client, next_owner) or 1
end
return hand_over(head, next_client, next_owner, ARGV[5], ARGV[4], ARGV[8], ARGV[7], ARGV[6])
  or 1
