-- uses: now history
-- KEYS[1] run hash, KEYS[2] its history, KEYS[3] its metadata. ARGV: from_start ('1'/'0'),
-- args ('' = keep), kwargs ('' = keep), grace, the history note, version ('' = keep).
-- Replies {'ok', the run hash, the version it had}.
local h = KEYS[1]
local status = redis.call('HGET', h, 'status')
if not status then return {'missing'} end
if status ~= 'FAILED' and status ~= 'CANCELLED' then return {'state', status} end
local fields = redis.call('HKEYS', h)
for _, f in ipairs(fields) do
  if string.sub(f, 1, 2) == 'c:' then
    local pos = string.sub(f, 3)
    local drop = ARGV[1] == '1'
    if not drop then
      local meta = cjson.decode(redis.call('HGET', h, f))
      drop = meta['s'] ~= 'succeeded'
    end
    if drop then redis.call('HDEL', h, f, 'v:' .. pos) end
  end
end
if ARGV[2] ~= '' then redis.call('HSET', h, 'args', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', h, 'kwargs', ARGV[3]) end
local was = redis.call('HGET', h, 'ver') or ''
if ARGV[6] ~= '' then redis.call('HSET', h, 'ver', ARGV[6]) end
redis.call('PERSIST', h)
redis.call('PERSIST', KEYS[2])
redis.call('PERSIST', KEYS[3])
note(KEYS[2], 'retry', now, ARGV[5])
redis.call('HINCRBY', h, 'token', 1)
redis.call('HSET', h, 'status', 'PENDING', 'error', '', 'fstep', '', 'result', '',
           'rec', '0', 'finished', '', 'nb', '', 'owner', '', 'lease', '',
           'due', tostring(now + tonumber(ARGV[4])), 'updated', tostring(now))
return {'ok', redis.call('HGETALL', h), was}
