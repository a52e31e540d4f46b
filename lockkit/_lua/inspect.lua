-- Read a lock's state without changing it.
--
-- KEYS[1] owner key   KEYS[2] fence key   KEYS[3] queue
-- KEYS[4] liveness hash, KEYS[5] holder record (both optional)
-- ARGV[1] optional: how many queue entries to list (with KEYS[4] and KEYS[5])
--
-- Returns {owner value or false, pttl of the owner key, last token or false, queue length},
-- followed, with KEYS[5], by the holder record (or false) and, for each of the first
-- ARGV[1] queue entries in order, its member, its score and its owner record (or false).
local result = {
  redis.call('GET', KEYS[1]),
  redis.call('PTTL', KEYS[1]),
  redis.call('GET', KEYS[2]),
  redis.call('ZCARD', KEYS[3]),
}
if KEYS[5] then
  result[5] = redis.call('GET', KEYS[5]) or false
  local entries = redis.call('ZRANGE', KEYS[3], 0, tonumber(ARGV[1] or '100') - 1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    result[#result + 1] = entries[i]
    result[#result + 1] = entries[i + 1]
    result[#result + 1] = redis.call('HGET', KEYS[4], entries[i]) or false
  end
end
return result
