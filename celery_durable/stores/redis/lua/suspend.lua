-- uses: now holds
-- KEYS[1] run hash. ARGV: token, status, position ('' = no step), meta, value,
-- kind, step key, wait position, wait id, until ('' = none), name, key, after
if not holds(KEYS[1], ARGV[1]) then return 0 end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'c:' .. ARGV[3], ARGV[4], 'v:' .. ARGV[3], ARGV[5])
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'owner', '', 'lease', '',
           'nb', ARGV[10], 'due', ARGV[10], 'updated', tostring(now),
           'wkind', ARGV[6], 'wstep', ARGV[7], 'wpos', ARGV[8], 'wid', ARGV[9],
           'wuntil', ARGV[10], 'wname', ARGV[11], 'wkey', ARGV[12], 'wafter', ARGV[13],
           'wres', '')
return 1
