-- uses: micros
-- KEYS[1] mailbox (sorted set seq -> "seq:id:payload"), KEYS[2] waiter set; one
-- hash tag. ARGV: run id, after (seq), buffer (microseconds). Returns the oldest
-- buffered event newer than `after`, or false.
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. fmt(now_us - tonumber(ARGV[3])))
local r = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf', 'LIMIT', 0, 1)
return r[1] or false
