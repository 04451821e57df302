-- uses: holds
-- KEYS[1] run hash, KEYS[2] its metadata hash. ARGV: token, then name/JSON value pairs.
if not holds(KEYS[1], ARGV[1]) then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
