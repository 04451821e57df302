-- The control fields the scripts compute with. A run whose status is unknown, or whose
-- field among these does not parse as a number, is corrupt: `unreadable` names the field,
-- and `dead_letter_corrupt` ends the run (FAILED, the field named in its error) so one
-- bad run never stops a delivery loop or a sweep.
local known = {PENDING=true, RUNNING=true, RETRYING=true, SLEEPING=true, WAITING=true,
               SUCCEEDED=true, FAILED=true, CANCELLED=true, REPLACED=true}
local function unreadable(h)
  local v = redis.call('HMGET', h, 'status', 'token', 'rec', 'nb', 'lease', 'due')
  if v[1] and not known[v[1]] then return 'status' end
  local names = {'status', 'token', 'rec', 'nb', 'lease', 'due'}
  for i = 2, 6 do
    if v[i] and v[i] ~= '' and not tonumber(v[i]) then return names[i] end
  end
  return nil
end
local function dead_letter_corrupt(h, field, now)
  local value = redis.call('HGET', h, field) or ''
  -- a new fencing token no holder can have, even when the old one was the damage
  local token = tonumber(redis.call('HGET', h, 'token') or '')
  token = token and math.floor(token) + 1 or math.floor(now * 1000)
  redis.call('HSET', h, 'status', 'FAILED', 'token', string.format('%.0f', token),
             'owner', '', 'lease', '', 'due', '', 'nb', '', 'finished', tostring(now),
             'updated', tostring(now), 'fstep', '', 'error', cjson.encode({
               'CorruptCheckpointError',
               'the stored field ' .. field .. ' of this run cannot be read (' ..
                 string.sub(value, 1, 80) .. '); the run is dead-lettered: fix or drop the ' ..
                 'field, then retry it', ''}))
end
