-- uses: now fmt clean_slots
-- ARGV: run id, limit, ttl. Returns 1 (holds a slot) or 0 (queued).
local id, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local keep = math.ceil((2 * ttl + 60) * 1000)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], keep) end
if redis.call('ZSCORE', KEYS[1], id) then
  redis.call('ZADD', KEYS[1], fmt(now + ttl), id)
  return 1
end
local free = limit - redis.call('ZCARD', KEYS[1])
local rank = redis.call('ZRANK', KEYS[2], id)
local ahead = rank or redis.call('ZCARD', KEYS[2])
if free > 0 and ahead < free then
  redis.call('ZADD', KEYS[1], fmt(now + ttl), id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  return 1
end
if not rank then redis.call('ZADD', KEYS[2], fmt(now), id) end
redis.call('ZADD', KEYS[3], fmt(now + 2 * ttl), id)
return 0
