-- KEYS: holders (zset run id -> slot expiry), queue (zset run id -> FIFO order),
-- queue expiry (zset run id -> expiry); one hash tag. Drops what expired.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', fmt(now))) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
