-- Read a lock's state without changing it.
--
-- KEYS[1] owner key   KEYS[2] fence key   KEYS[3] queue
--
-- Returns {owner value or false, pttl of the owner key, last token or false, queue length}.
return {
  redis.call('GET', KEYS[1]),
  redis.call('PTTL', KEYS[1]),
  redis.call('GET', KEYS[2]),
  redis.call('ZCARD', KEYS[3]),
}
