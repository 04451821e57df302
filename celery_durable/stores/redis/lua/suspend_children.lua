-- uses: now fmt holds
-- KEYS[1] run hash. ARGV: token, position ('' = no step), meta, value,
-- wait step key, wait position, wait id, recheck (seconds), need.
local h = KEYS[1]
if not holds(h, ARGV[1]) then return 'lost' end
if ARGV[2] ~= '' then
  redis.call('HSET', h, 'c:' .. ARGV[2], ARGV[3], 'v:' .. ARGV[2], ARGV[4])
end
if (tonumber(redis.call('HGET', h, 'cdone') or '') or 0) >= tonumber(ARGV[9]) then
  return 'notice'
end
redis.call('HSET', h, 'status', 'WAITING', 'owner', '', 'lease', '', 'nb', '',
           'due', fmt(now + tonumber(ARGV[8])), 'updated', fmt(now),
           'wkind', 'children', 'wstep', ARGV[5], 'wpos', ARGV[6], 'wid', ARGV[7],
           'wuntil', '', 'wname', '', 'wkey', '', 'wafter', '0', 'wres', '', 'cneed', ARGV[9])
return 'parked'
