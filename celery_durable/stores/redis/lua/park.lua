-- uses: now holds
-- KEYS[1] run hash. ARGV: token, status, delay, due_in, position ('' = none), meta, value,
-- args, kwargs, options (each '' = keep the stored one)
if not holds(KEYS[1], ARGV[1]) then return 0 end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'c:' .. ARGV[5], ARGV[6], 'v:' .. ARGV[5], ARGV[7])
end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'args', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'kwargs', ARGV[9]) end
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'options', ARGV[10]) end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'owner', '', 'lease', '',
           'nb', tostring(now + tonumber(ARGV[3])), 'due', tostring(now + tonumber(ARGV[4])),
           'updated', tostring(now))
return 1
