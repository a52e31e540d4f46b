-- Drop this client's queue entries whose waiters are gone (among the first 1000).
-- (Prefixed by _queue.lua: key layout, queue walk, wake.)
--
-- A client's liveness covers all its entries on a lock, so an entry whose leave never
-- took effect (acknowledged by a primary that then failed over, or given up after an
-- outage) looks alive while the client has other waiters on the lock, and the waiters
-- behind it would wait for it. The client runs this when a wake-up reached none of its
-- waiters (an owner id it is not waiting or asking for).
--
-- KEYS owner, fence, queue, liveness, holder record (optional)
-- ARGV[1] client id   ARGV[2] claim window ms   ARGV[3] fair mode (see _queue.lua)
-- ARGV[4] waiters' channel, "%s" standing for the client id   ARGV[5] how to wake
-- ARGV[6] fence keep ms   ARGV[7] minimum age of an entry to drop, ms
-- ARGV[8] n, then n owner ids of this client's waiters on this lock (kept), then the
--         owner ids the wake-ups went to (a lock handed to one of them is given back)
--
-- Returns {dropped} or, when ARGV[5] is "0" and a waiter must be woken by the caller,
-- {dropped, channel, message}.
local client = ARGV[1]
local n = tonumber(ARGV[8])
local waiting, gone = {}, {}
for i = 9, 8 + n do
  waiting[ARGV[i]] = true
end
for i = 9 + n, #ARGV do
  gone[ARGV[i]] = true
end
local time = redis.call('TIME')
local now_ms = now_ms_of(time)
-- entries younger than this may be of a waiter whose first ask is still on its way back
local newest = tonumber(time[1]) * 1000000 + tonumber(time[2]) - tonumber(ARGV[7]) * 1000
local dropped = 0
local holder = redis.call('GET', KEYS[1])
local free = not holder
local handed_to = holder and (string.match(holder, '^~(.*)$') or holder)
if handed_to and gone[handed_to] then
  redis.call('DEL', KEYS[1]) -- granted or reserved for a waiter that is gone
  free = true
  dropped = dropped + 1
end
local entries = redis.call('ZRANGE', KEYS[3], 0, 999, 'WITHSCORES')
for i = 1, #entries, 2 do
  local member = entries[i]
  local of, owner = string.match(member, '^([^:]*):(.*)$')
  if of == client and not waiting[owner] and tonumber(entries[i + 1]) <= newest then
    redis.call('ZREM', KEYS[3], member)
    redis.call('HDEL', KEYS[4], member)
    dropped = dropped + 1
  end
end
if free and dropped > 0 then
  local head, next_client, next_owner = next_live_waiter(KEYS[3], KEYS[4], now_ms, nil)
  if head then
    local woken
    if ARGV[3] == '0' then
      woken = wake(ARGV[5], ARGV[4], next_client, next_owner)
    else
      woken = hand_over(
        head, next_client, next_owner, ARGV[3], ARGV[2], ARGV[6], ARGV[5], ARGV[4]
      )
    end
    if woken then
      return {dropped, woken[1], woken[2]}
    end
  end
end
return {dropped}
