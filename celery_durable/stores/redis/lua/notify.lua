-- uses: now fmt finished
-- KEYS[1] parent run hash. ARGV: grace. Counts the notice ('cdone'); resumes a parent
-- parked at its children once the count reaches the 'cneed' it parked with.
local h = KEYS[1]
local v = redis.call('HMGET', h, 'status', 'wkind', 'wres', 'wid', 'cneed')
if not v[1] or finished[v[1]] then return {'no'} end
local done = redis.call('HINCRBY', h, 'cdone', 1)
if v[1] == 'WAITING' and v[2] == 'children' and (not v[3] or v[3] == '')
   and done >= (tonumber(v[5] or '') or 0) then
  redis.call('HSET', h, 'wres', cjson.encode({how='child', wid=v[4]}), 'status', 'PENDING',
             'nb', '', 'due', fmt(now + tonumber(ARGV[1])), 'updated', fmt(now))
  return {'publish', redis.call('HGETALL', h)}
end
return {'no'}
