-- uses: now holds
-- KEYS[1] run hash. ARGV: token, ttl. Returns the new lease expiry, or 0 if lost.
if not holds(KEYS[1], ARGV[1]) then return 0 end
local lease = tostring(now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'lease', lease, 'due', lease)
return lease
