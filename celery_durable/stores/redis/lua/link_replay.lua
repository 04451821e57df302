-- KEYS[1] run hash. ARGV: the id of a run that replays it (JSON-quoted).
-- Adds it to the run's `replayed` JSON list, once; 0 if the run is gone.
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then return 0 end
local list = redis.call('HGET', h, 'replayed')
if not list or list == '' then
  list = '[' .. ARGV[1] .. ']'
elseif string.find(list, ARGV[1], 1, true) then
  return 1
else
  list = string.sub(list, 1, -2) .. ',' .. ARGV[1] .. ']'
end
redis.call('HSET', h, 'replayed', list)
return 1
