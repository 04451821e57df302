-- uses: now fmt finished
-- KEYS[1] run hash. ARGV: task, args, kwargs, options, parent, idempotency key, grace,
-- replace_finished ('1': a finished run under this id is replaced by the new one).
if redis.call('EXISTS', KEYS[1]) == 1 then
  local status = redis.call('HGET', KEYS[1], 'status')
  if ARGV[8] ~= '1' or not finished[status] then return 0 end
  redis.call('DEL', KEYS[1])  -- its checkpoints and its retention expiry go with it
end
redis.call('HSET', KEYS[1], 'task', ARGV[1], 'args', ARGV[2], 'kwargs', ARGV[3],
           'options', ARGV[4], 'parent', ARGV[5], 'ikey', ARGV[6], 'status', 'PENDING',
           'created', fmt(now), 'updated', fmt(now), 'token', '0', 'rec', '0',
           'due', fmt(now + tonumber(ARGV[7])))
return 1
