-- uses: now fmt
-- KEYS[1] holders. ARGV: ttl, run ids... Extends the slots still held.
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], fmt(now + tonumber(ARGV[1])), ARGV[i])
  end
end
return 1
