-- uses: now
-- KEYS[1] the token's hash. ARGV: run id, timeout in seconds ('' = none), tags (JSON),
-- seconds kept past the expiry. Creates the token unless it exists; replies {now, its hash}.
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then
  local expires = ''
  if ARGV[2] ~= '' then expires = tostring(now + tonumber(ARGV[2])) end
  redis.call('HSET', h, 'run', ARGV[1], 'created', tostring(now), 'expires', expires,
             'completed', '', 'payload', '', 'tags', ARGV[3])
  if expires ~= '' then
    redis.call('PEXPIREAT', h, math.floor((tonumber(expires) + tonumber(ARGV[4])) * 1000))
  end
end
return {tostring(now), redis.call('HGETALL', h)}
