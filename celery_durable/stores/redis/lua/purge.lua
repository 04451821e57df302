-- KEYS[1] run hash, KEYS[2] its history, KEYS[3] its metadata. ARGV: finished-before cutoff, then the statuses to purge.
-- Deletes the run if it is in one of them and finished before the cutoff: 1 deleted,
-- 0 kept, -1 gone already.
local v = redis.call('HMGET', KEYS[1], 'status', 'finished')
if not v[1] then return -1 end
local fin = tonumber(v[2] or '')
if not fin or fin >= tonumber(ARGV[1]) then return 0 end
for i = 2, #ARGV do
  if v[1] == ARGV[i] then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
    return 1
  end
end
return 0
