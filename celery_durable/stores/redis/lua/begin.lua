-- uses: now finished control history
-- KEYS[1] run hash, KEYS[2] its history. ARGV: task, args, kwargs, options, owner, ttl,
-- steal_from, max_recoveries, headers (the JSON of the options' headers, '' = none),
-- tags (JSON list, '' = none), version ('' = none): recorded if the run is created here
-- Returns {outcome, token}; RedisStore.begin reads the hash with a plain HGETALL sent right
-- behind it (a hash returned through Lua costs the server ~4x as much: every field becomes
-- a Lua string and back). A corrupt control field dead-letters the run: {'dead', '0'}.
local h = KEYS[1]
local bad = unreadable(h)
if bad then
  dead_letter_corrupt(h, bad, now)
  return {'dead', '0'}
end
local ttl = tonumber(ARGV[6])
local v = redis.call('HMGET', h, 'status', 'nb', 'owner', 'lease', 'options')
local status = v[1]
if not status then
  redis.call('HSET', h, 'task', ARGV[1], 'args', ARGV[2], 'kwargs', ARGV[3],
             'options', ARGV[4], 'status', 'PENDING', 'created', tostring(now),
             'token', '0', 'rec', '0')
  if ARGV[10] ~= '' then redis.call('HSET', h, 'tags', ARGV[10]) end
  if ARGV[11] ~= '' then redis.call('HSET', h, 'ver', ARGV[11]) end
  status = 'PENDING'
elseif finished[status] then
  return {'finished', '0'}
elseif v[2] and v[2] ~= '' and tonumber(v[2]) > now then
  return {'early', '0'}
elseif v[3] and v[3] ~= '' and v[4] and v[4] ~= '' and tonumber(v[4]) > now
       and v[3] ~= ARGV[7] then
  return {'busy', '0'}
end
if v[1] and (not v[5] or v[5] == '' or v[5] == '{}') then
  redis.call('HSET', h, 'options', ARGV[4])  -- created before its first delivery
elseif v[1] and ARGV[9] ~= '' and not string.find(v[5], '"headers"', 1, true)
       and string.sub(v[5], -1) == '}' then
  -- created without headers: keep its options, add this delivery's (the trace header);
  -- stores/transitions.py merged_options is the same rule for the other stores. Spliced
  -- as text: a cjson round trip would turn the empty lists of signatures into objects.
  -- (Options that do not end like a JSON object are corrupt: parse_begin reports them.)
  redis.call('HSET', h, 'options', string.sub(v[5], 1, -2) .. ',"headers":' .. ARGV[9] .. '}')
end
if status == 'RUNNING' then
  -- the previous holder died (its lease expired, or it was seen dead): a recovery
  local rec = redis.call('HINCRBY', h, 'rec', 1)
  if rec > tonumber(ARGV[8]) then
    note(KEYS[2], 'recovery', now, lost_note(v[3], 'dead-lettered after ' .. rec .. ' recoveries'))
    redis.call('HINCRBY', h, 'token', 1)
    redis.call('HSET', h, 'status', 'FAILED', 'owner', '', 'lease', '', 'due', '',
               'finished', tostring(now), 'updated', tostring(now), 'error', cjson.encode({
                 'celery_durable.errors.WorkerLostError',
                 'worker lost ' .. rec .. ' times (durable_max_recoveries=' .. ARGV[8] .. ')',
                 ''}))
    return {'dead', '0'}
  end
  note(KEYS[2], 'recovery', now, lost_note(v[3], 'a new delivery took the run over'))
end
local token = redis.call('HINCRBY', h, 'token', 1)
local lease = tostring(now + ttl)
redis.call('HSET', h, 'status', 'RUNNING', 'owner', ARGV[5], 'lease', lease,
           'due', lease, 'nb', '', 'updated', tostring(now))
redis.call('HSETNX', h, 'started', tostring(now))
return {'acquired', tostring(token)}
