-- uses: holds
-- KEYS[1] run hash. ARGV: token, position, meta, value
if not holds(KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'c:' .. ARGV[2], ARGV[3], 'v:' .. ARGV[2], ARGV[4])
return 1
