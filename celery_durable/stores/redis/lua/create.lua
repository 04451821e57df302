-- uses: now fmt
-- KEYS[1] run hash. ARGV: task, args, kwargs, options, parent, idempotency key, grace.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'task', ARGV[1], 'args', ARGV[2], 'kwargs', ARGV[3],
           'options', ARGV[4], 'parent', ARGV[5], 'ikey', ARGV[6], 'status', 'PENDING',
           'created', fmt(now), 'updated', fmt(now), 'token', '0', 'rec', '0',
           'due', fmt(now + tonumber(ARGV[7])))
return 1
