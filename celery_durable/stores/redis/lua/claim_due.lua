-- uses: now finished control history
-- KEYS[1] run hash, KEYS[2] its history. ARGV: grace, max_recoveries
local h = KEYS[1]
local bad = unreadable(h)
if bad then
  dead_letter_corrupt(h, bad, now)
  return {'dead', redis.call('HGETALL', h)}
end
local v = redis.call('HMGET', h, 'status', 'due', 'owner', 'lease', 'rec')
local status = v[1]
if not status or finished[status] then return {'gone'} end
if not v[2] or v[2] == '' then return {'later', ''} end  -- not due at all
if tonumber(v[2]) > now then return {'later', v[2]} end
if status == 'RUNNING' then
  if v[3] and v[3] ~= '' and v[4] and v[4] ~= '' and tonumber(v[4]) > now then
    redis.call('HSET', h, 'due', v[4])
    return {'later', v[4]}
  end
  local rec = redis.call('HINCRBY', h, 'rec', 1)
  redis.call('HINCRBY', h, 'token', 1)
  redis.call('HSET', h, 'owner', '', 'lease', '')
  if rec > tonumber(ARGV[2]) then
    note(KEYS[2], 'recovery', now, lost_note(v[3], 'dead-lettered after ' .. rec .. ' recoveries'))
    redis.call('HSET', h, 'status', 'FAILED', 'due', '', 'finished', tostring(now),
               'updated', tostring(now), 'error', cjson.encode({
                 'celery_durable.errors.WorkerLostError',
                 'worker lost ' .. rec .. ' times (durable_max_recoveries=' .. ARGV[2] .. ')',
                 ''}))
    return {'dead', redis.call('HGETALL', h)}
  end
  note(KEYS[2], 'recovery', now, lost_note(v[3], 'the sweeper sent the run again'))
  status = 'PENDING'
elseif status == 'SLEEPING' or status == 'WAITING' then
  status = 'PENDING'
end
redis.call('HSET', h, 'status', status, 'nb', '', 'due', tostring(now + tonumber(ARGV[1])),
           'updated', tostring(now))
return {'publish', redis.call('HGETALL', h)}
