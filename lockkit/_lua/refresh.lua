-- Keep a client's queue entries alive while it has waiters.
--
-- KEYS pairs: queue, liveness hash, for each lock the client waits on
-- ARGV[1] client id   ARGV[2] queue lease ms
--
-- Returns the number of locks refreshed.
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lease = tonumber(ARGV[2])
for i = 1, #KEYS, 2 do
  redis.call('HSET', KEYS[i + 1], ARGV[1], now_ms + lease)
  redis.call('PEXPIRE', KEYS[i], lease * 2)
  redis.call('PEXPIRE', KEYS[i + 1], lease * 2)
end
return #KEYS / 2
