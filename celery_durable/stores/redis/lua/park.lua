-- uses: now holds
-- KEYS[1] run hash. ARGV: token, status, delay, due_in, position ('' = none), meta, value
if not holds(KEYS[1], ARGV[1]) then return 0 end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'c:' .. ARGV[5], ARGV[6], 'v:' .. ARGV[5], ARGV[7])
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'owner', '', 'lease', '',
           'nb', tostring(now + tonumber(ARGV[3])), 'due', tostring(now + tonumber(ARGV[4])),
           'updated', tostring(now))
return 1
