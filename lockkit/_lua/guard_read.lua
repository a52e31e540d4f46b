-- Read a guarded resource without changing it.
--
-- KEYS[1] the resource's hash
--
-- Returns {value, version, token, owner, lock, backend}, false for each field not set.
return redis.call('HMGET', KEYS[1], 'value', 'version', 'token', 'owner', 'lock', 'backend')
