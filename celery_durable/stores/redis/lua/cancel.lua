-- uses: now fmt history
-- KEYS[1] run hash, KEYS[2] its history. ARGV: create_missing ('1'/'0'), the history note.
local h = KEYS[1]
local status = redis.call('HGET', h, 'status')
if not status then
  if ARGV[1] ~= '1' then return {'missing'} end
  redis.call('HSET', h, 'task', '', 'args', '[]', 'kwargs', '{}', 'options', '{}',
             'created', fmt(now), 'token', '0', 'rec', '0')
elseif status == 'SUCCEEDED' or status == 'CANCELLED' or status == 'REPLACED' then
  return {'state', status}
end
redis.call('HINCRBY', h, 'token', 1)
redis.call('HSET', h, 'status', 'CANCELLED', 'owner', '', 'lease', '', 'due', '', 'nb', '',
           'finished', fmt(now), 'updated', fmt(now))
note(KEYS[2], 'cancel', now, ARGV[2])
return {'ok', redis.call('HGETALL', h)}
