-- KEYS[1] the idempotency key (a global key). ARGV: run id, ttl (milliseconds).
local bound = redis.call('GET', KEYS[1])
if bound then return bound end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
