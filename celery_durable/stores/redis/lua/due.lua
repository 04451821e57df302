-- uses: now
-- KEYS[1] the due set (run id -> when the sweeper should look at it). ARGV: limit.
-- Returns {server time, run ids due by the server's clock...}.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tostring(now), 'LIMIT', 0,
                       tonumber(ARGV[1]))
table.insert(due, 1, tostring(now))
return due
