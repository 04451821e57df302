-- uses: micros
-- KEYS[1] mailbox, KEYS[2] waiter set. ARGV: event id, payload, buffer (microseconds).
-- Returns {seq, waiters}.
local buffer = tonumber(ARGV[3])
local seq = now_us
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] and tonumber(last[2]) >= seq then seq = tonumber(last[2]) + 1 end
local s = fmt(seq)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. fmt(now_us - buffer))
if buffer > 0 then
  redis.call('ZADD', KEYS[1], s, s .. ':' .. ARGV[1] .. ':' .. ARGV[2])
  redis.call('PEXPIRE', KEYS[1], math.ceil(buffer / 1000) + 1000)
end
return {s, redis.call('SMEMBERS', KEYS[2])}
