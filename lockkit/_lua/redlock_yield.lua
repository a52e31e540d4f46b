-- Redlock: give back a grant that did not make a quorum, keeping this waiter's turn.
--
-- KEYS[1] owner   ARGV[1] owner id   ARGV[2] claim window ms
--
-- The lock stays reserved for the same owner ("~" .. owner, as a handover leaves it)
-- for the claim window: its next try takes it again, nobody else can, and if the
-- waiter gives up its release hands the lock on. Returns 1 if it was held, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], '~' .. ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
