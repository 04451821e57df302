-- uses: now holds history
-- KEYS[1] run hash, KEYS[2] its history. ARGV: token, position, meta, value
-- save_step of a FAILED step: the checkpoint, and the failed attempt in the history.
if not holds(KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'c:' .. ARGV[2], ARGV[3], 'v:' .. ARGV[2], ARGV[4])
note_attempt(KEYS[2], now, ARGV[2], ARGV[3])
return 1
