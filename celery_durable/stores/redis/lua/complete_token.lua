-- uses: now
-- KEYS[1] the token's hash. ARGV: payload, seconds a completed token is kept.
-- The first completion of a pending, unexpired token wins (stores/tokens.py: completion).
-- Replies {outcome, now, its hash}: completed, already, expired or unknown.
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then return {'unknown', tostring(now), {}} end
local outcome = 'completed'
if redis.call('HGET', h, 'completed') ~= '' then
  outcome = 'already'
else
  local expires = redis.call('HGET', h, 'expires')
  if expires ~= '' and now >= tonumber(expires) then outcome = 'expired' end
end
if outcome == 'completed' then
  redis.call('HSET', h, 'completed', tostring(now), 'payload', ARGV[1])
  redis.call('PEXPIRE', h, math.floor(tonumber(ARGV[2]) * 1000))
end
return {outcome, tostring(now), redis.call('HGETALL', h)}
