-- uses: now
-- KEYS[1] run hash. ARGV: grace
local h = KEYS[1]
local v = redis.call('HMGET', h, 'status', 'wkind', 'wres', 'wid')
if (v[1] ~= 'SLEEPING' and v[1] ~= 'WAITING') or not v[2] or v[2] == ''
   or (v[3] and v[3] ~= '') then
  return {'no'}
end
redis.call('HSET', h, 'wres', cjson.encode({how='woken', wid=v[4]}),
           'status', 'PENDING', 'nb', '', 'due', tostring(now + tonumber(ARGV[1])),
           'updated', tostring(now))
return {'publish', redis.call('HGETALL', h)}
