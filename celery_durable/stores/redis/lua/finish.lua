-- uses: now holds
-- KEYS[1] run hash, KEYS[2] its history, KEYS[3] its metadata. ARGV: token, status, result, error (json or ''), failed step, retention
if not holds(KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'result', ARGV[3], 'error', ARGV[4],
           'fstep', ARGV[5], 'owner', '', 'lease', '', 'due', '', 'nb', '',
           'finished', tostring(now), 'updated', tostring(now))
local retention = tonumber(ARGV[6])
if retention > 0 and ARGV[2] ~= 'FAILED' then
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], math.ceil(retention)) end
end
return 1
