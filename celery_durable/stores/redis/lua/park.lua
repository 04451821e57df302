-- uses: now holds history
-- KEYS[1] run hash, KEYS[2] its history. ARGV: token, status, delay, due_in, position
-- ('' = none), meta, value, args, kwargs, options (each '' = keep the stored one),
-- retrying (the RetryInfo JSON of a RETRYING step, else '')
if not holds(KEYS[1], ARGV[1]) then return 0 end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'c:' .. ARGV[5], ARGV[6], 'v:' .. ARGV[5], ARGV[7])
end
if ARGV[11] ~= '' then
  redis.call('HINCRBY', KEYS[1], 'retries', 1)
  redis.call('HSET', KEYS[1], 'retrying', ARGV[11])
  note_attempt(KEYS[2], now, ARGV[5], ARGV[6])
end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'args', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'kwargs', ARGV[9]) end
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'options', ARGV[10]) end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'owner', '', 'lease', '',
           'nb', tostring(now + tonumber(ARGV[3])), 'due', tostring(now + tonumber(ARGV[4])),
           'updated', tostring(now))
return 1
