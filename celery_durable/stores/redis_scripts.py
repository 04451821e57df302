"""Lua scripts of the RedisStore. Each touches only one run's hash (or one
event's mailbox and waiter set, which share a hash tag), so the store works
unchanged on Redis Cluster (the hash key carries the run id as its hash
tag). Times come from the server's clock (``TIME``)."""

from __future__ import annotations

NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

HOLDS = """
local function holds(h, token)
  local v = redis.call('HMGET', h, 'token', 'owner')
  return v[1] == token and v[2] and v[2] ~= ''
end
"""

FINISHED = """
local finished = {SUCCEEDED=true, FAILED=true, CANCELLED=true}
"""

# KEYS[1] run hash. ARGV: task, args, kwargs, options, owner, ttl, steal_from, max_recoveries
# Returns {outcome, token}; RedisStore.begin reads the hash with a plain HGETALL sent right
# behind it (a hash returned through Lua costs the server ~4x as much: every field becomes
# a Lua string and back).
BEGIN = NOW + FINISHED + """
local h = KEYS[1]
local ttl = tonumber(ARGV[6])
local v = redis.call('HMGET', h, 'status', 'nb', 'owner', 'lease', 'options')
local status = v[1]
if not status then
  redis.call('HSET', h, 'task', ARGV[1], 'args', ARGV[2], 'kwargs', ARGV[3],
             'options', ARGV[4], 'status', 'PENDING', 'created', tostring(now),
             'token', '0', 'rec', '0')
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
elseif v[1] and string.find(ARGV[4], '"headers"', 1, true)
       and not string.find(v[5], '"headers"', 1, true) then
  -- created with its routing only: keep it, add this delivery's trace header
  -- (publish.merged_options is the same rule for the other stores)
  local ok, stored = pcall(cjson.decode, v[5])  -- corrupt: left for parse_begin to report
  if ok and type(stored) == 'table' then
    stored['headers'] = cjson.decode(ARGV[4])['headers']
    redis.call('HSET', h, 'options', cjson.encode(stored))
  end
end
if status == 'RUNNING' then
  -- the previous holder died (its lease expired, or it was seen dead): a recovery
  local rec = redis.call('HINCRBY', h, 'rec', 1)
  if rec > tonumber(ARGV[8]) then
    redis.call('HINCRBY', h, 'token', 1)
    redis.call('HSET', h, 'status', 'FAILED', 'owner', '', 'lease', '', 'due', '',
               'finished', tostring(now), 'updated', tostring(now), 'error', cjson.encode({
                 'celery_durable.errors.WorkerLostError',
                 'worker lost ' .. rec .. ' times (durable_max_recoveries=' .. ARGV[8] .. ')',
                 ''}))
    return {'dead', '0'}
  end
end
local token = redis.call('HINCRBY', h, 'token', 1)
local lease = tostring(now + ttl)
redis.call('HSET', h, 'status', 'RUNNING', 'owner', ARGV[5], 'lease', lease,
           'due', lease, 'nb', '', 'updated', tostring(now))
redis.call('HSETNX', h, 'started', tostring(now))
return {'acquired', tostring(token)}
"""

# KEYS[1] run hash. ARGV: token, position, meta, value
SAVE_STEP = HOLDS + """
if not holds(KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'c:' .. ARGV[2], ARGV[3], 'v:' .. ARGV[2], ARGV[4])
return 1
"""

# KEYS[1] run hash. ARGV: token, status, delay, due_in, position ('' = none), meta, value
PARK = NOW + HOLDS + """
if not holds(KEYS[1], ARGV[1]) then return 0 end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'c:' .. ARGV[5], ARGV[6], 'v:' .. ARGV[5], ARGV[7])
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'owner', '', 'lease', '',
           'nb', tostring(now + tonumber(ARGV[3])), 'due', tostring(now + tonumber(ARGV[4])),
           'updated', tostring(now))
return 1
"""

# KEYS[1] run hash. ARGV: token, status, result, error (json or ''), failed step, retention
FINISH = NOW + HOLDS + """
if not holds(KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'result', ARGV[3], 'error', ARGV[4],
           'fstep', ARGV[5], 'owner', '', 'lease', '', 'due', '', 'nb', '',
           'finished', tostring(now), 'updated', tostring(now))
local retention = tonumber(ARGV[6])
if retention > 0 and ARGV[2] ~= 'FAILED' then
  redis.call('EXPIRE', KEYS[1], math.ceil(retention))
end
return 1
"""

# KEYS[1] run hash. ARGV: token, ttl. Returns the new lease expiry, or 0 if lost.
RENEW = NOW + HOLDS + """
if not holds(KEYS[1], ARGV[1]) then return 0 end
local lease = tostring(now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'lease', lease, 'due', lease)
return lease
"""

# KEYS[1] run hash. ARGV: grace, max_recoveries
CLAIM_DUE = NOW + FINISHED + """
local h = KEYS[1]
local v = redis.call('HMGET', h, 'status', 'due', 'owner', 'lease', 'rec')
local status = v[1]
if not status or finished[status] then return {'gone'} end
if not v[2] or v[2] == '' then return {'gone'} end
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
    redis.call('HSET', h, 'status', 'FAILED', 'due', '', 'finished', tostring(now),
               'updated', tostring(now), 'error', cjson.encode({
                 'celery_durable.errors.WorkerLostError',
                 'worker lost ' .. rec .. ' times (durable_max_recoveries=' .. ARGV[2] .. ')',
                 ''}))
    return {'dead', redis.call('HGETALL', h)}
  end
  status = 'PENDING'
elseif status == 'SLEEPING' or status == 'WAITING' then
  status = 'PENDING'
end
redis.call('HSET', h, 'status', status, 'nb', '', 'due', tostring(now + tonumber(ARGV[1])),
           'updated', tostring(now))
return {'publish', redis.call('HGETALL', h)}
"""

# KEYS[1] run hash. ARGV: from_start ('1'/'0'), args ('' = keep), kwargs ('' = keep), grace
RESET = NOW + """
local h = KEYS[1]
local status = redis.call('HGET', h, 'status')
if not status then return {'missing'} end
if status ~= 'FAILED' and status ~= 'CANCELLED' then return {'state', status} end
local fields = redis.call('HKEYS', h)
for _, f in ipairs(fields) do
  if string.sub(f, 1, 2) == 'c:' then
    local pos = string.sub(f, 3)
    local drop = ARGV[1] == '1'
    if not drop then
      local meta = cjson.decode(redis.call('HGET', h, f))
      drop = meta['s'] ~= 'succeeded'
    end
    if drop then redis.call('HDEL', h, f, 'v:' .. pos) end
  end
end
if ARGV[2] ~= '' then redis.call('HSET', h, 'args', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', h, 'kwargs', ARGV[3]) end
redis.call('PERSIST', h)
redis.call('HINCRBY', h, 'token', 1)
redis.call('HSET', h, 'status', 'PENDING', 'error', '', 'fstep', '', 'result', '',
           'rec', '0', 'finished', '', 'nb', '', 'owner', '', 'lease', '',
           'due', tostring(now + tonumber(ARGV[4])), 'updated', tostring(now))
return {'ok', redis.call('HGETALL', h)}
"""

# -- durable waits --------------------------------------------------------------
# Event sequence numbers are integer microseconds of the server clock; they are
# formatted with %.0f because Lua's tostring (and cjson) keep only 14 digits.

MICROS = """
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function fmt(x) return string.format('%.0f', x) end
"""

# KEYS[1] run hash. ARGV: token, status, position ('' = no step), meta, value,
# kind, step key, wait position, wait id, until ('' = none), name, key, after
SUSPEND = NOW + HOLDS + """
if not holds(KEYS[1], ARGV[1]) then return 0 end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'c:' .. ARGV[3], ARGV[4], 'v:' .. ARGV[3], ARGV[5])
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'owner', '', 'lease', '',
           'nb', ARGV[10], 'due', ARGV[10], 'updated', tostring(now),
           'wkind', ARGV[6], 'wstep', ARGV[7], 'wpos', ARGV[8], 'wid', ARGV[9],
           'wuntil', ARGV[10], 'wname', ARGV[11], 'wkey', ARGV[12], 'wafter', ARGV[13],
           'wres', '')
return 1
"""

# KEYS[1] mailbox (sorted set seq -> "seq:id:payload"), KEYS[2] waiter set; one
# hash tag. ARGV: run id, after (seq), buffer (microseconds). Returns the oldest
# buffered event newer than `after`, or false.
REGISTER = MICROS + """
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. fmt(now_us - tonumber(ARGV[3])))
local r = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf', 'LIMIT', 0, 1)
return r[1] or false
"""

# KEYS[1] mailbox, KEYS[2] waiter set. ARGV: event id, payload, buffer (microseconds).
# Returns {seq, waiters}.
POST = MICROS + """
local buffer = tonumber(ARGV[3])
local seq = now_us
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] and tonumber(last[2]) >= seq then seq = tonumber(last[2]) + 1 end
local s = fmt(seq)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. fmt(now_us - buffer))
if buffer > 0 then
  redis.call('ZADD', KEYS[1], s, s .. ':' .. ARGV[1] .. ':' .. ARGV[2])
  redis.call('PEXPIRE', KEYS[1], math.ceil(buffer / 1000) + 1000)
end
return {s, redis.call('SMEMBERS', KEYS[2])}
"""

# KEYS[1] run hash. ARGV: name, key, event id, seq, payload, grace
DELIVER = NOW + FINISHED + """
local h = KEYS[1]
local v = redis.call('HMGET', h, 'status', 'wkind', 'wname', 'wkey', 'wres', 'wafter', 'wid')
if not v[1] or finished[v[1]] then return {'gone'} end
if v[1] ~= 'WAITING' or v[2] ~= 'event' or v[3] ~= ARGV[1] or v[4] ~= ARGV[2]
   or (v[5] and v[5] ~= '') or tonumber(ARGV[4]) <= (tonumber(v[6]) or 0) then
  return {'skip'}
end
redis.call('HSET', h, 'wres', cjson.encode({how='event', wid=v[7], id=ARGV[3], seq=ARGV[4],
                                            payload=ARGV[5]}),
           'status', 'PENDING', 'nb', '', 'due', tostring(now + tonumber(ARGV[6])),
           'updated', tostring(now))
return {'publish', redis.call('HGETALL', h)}
"""

# KEYS[1] run hash. ARGV: grace
WAKE = NOW + """
local h = KEYS[1]
local v = redis.call('HMGET', h, 'status', 'wkind', 'wres', 'wid')
if (v[1] ~= 'SLEEPING' and v[1] ~= 'WAITING') or not v[2] or v[2] == ''
   or (v[3] and v[3] ~= '') then
  return {'no'}
end
redis.call('HSET', h, 'wres', cjson.encode({how='woken', wid=v[4]}),
           'status', 'PENDING', 'nb', '', 'due', tostring(now + tonumber(ARGV[1])),
           'updated', tostring(now))
return {'publish', redis.call('HGETALL', h)}
"""
