-- uses: now finished
-- KEYS[1] run hash. ARGV: name, key, event id, seq, payload, grace
local h = KEYS[1]
local v = redis.call('HMGET', h, 'status', 'wkind', 'wname', 'wkey', 'wres', 'wafter', 'wid')
if not v[1] or finished[v[1]] then return {'gone'} end
if v[1] ~= 'WAITING' or v[2] ~= 'event' or v[3] ~= ARGV[1] or v[4] ~= ARGV[2]
   or (v[5] and v[5] ~= '') or tonumber(ARGV[4]) <= (tonumber(v[6]) or 0) then
  return {'skip'}
end
redis.call('HSET', h, 'wres', cjson.encode({how='event', wid=v[7], id=ARGV[3], seq=ARGV[4],
                                            payload=ARGV[5]}),
           'status', 'PENDING', 'nb', '', 'due', tostring(now + tonumber(ARGV[6])),
           'updated', tostring(now))
return {'publish', redis.call('HGETALL', h)}
