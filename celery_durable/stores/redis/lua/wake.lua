-- uses: now history
-- KEYS[1] run hash, KEYS[2] its history. ARGV: grace, the history note when SLEEPING,
-- when WAITING
local h = KEYS[1]
local v = redis.call('HMGET', h, 'status', 'wkind', 'wres', 'wid')
if (v[1] ~= 'SLEEPING' and v[1] ~= 'WAITING') or not v[2] or v[2] == ''
   or (v[3] and v[3] ~= '') then
  return {'no'}
end
note(KEYS[2], 'wake', now, v[1] == 'WAITING' and ARGV[3] or ARGV[2])
redis.call('HSET', h, 'wres', cjson.encode({how='woken', wid=v[4]}),
           'status', 'PENDING', 'nb', '', 'due', tostring(now + tonumber(ARGV[1])),
           'updated', tostring(now))
return {'publish', redis.call('HGETALL', h)}
