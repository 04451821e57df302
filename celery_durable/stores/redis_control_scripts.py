"""Lua scripts of the RedisStore's run controls (issue 7).

As in :mod:`celery_durable.stores.redis_scripts`, each script touches one
run's hash, one global key, or the keys of one concurrency group (which
share a hash tag), so the store works on Redis Cluster.
"""

from __future__ import annotations

from .redis_scripts import FINISHED, HOLDS, NOW

# Times and FIFO orders are formatted explicitly: Lua's tostring keeps only 14 digits.
FMT = """
local function fmt(x) return string.format('%.6f', x) end
"""

# KEYS[1] run hash. ARGV: task, args, kwargs, options, parent, idempotency key, grace.
CREATE = NOW + FMT + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'task', ARGV[1], 'args', ARGV[2], 'kwargs', ARGV[3],
           'options', ARGV[4], 'parent', ARGV[5], 'ikey', ARGV[6], 'status', 'PENDING',
           'created', fmt(now), 'updated', fmt(now), 'token', '0', 'rec', '0',
           'due', fmt(now + tonumber(ARGV[7])))
return 1
"""

# KEYS[1] run hash. ARGV: create_missing ('1'/'0').
CANCEL = NOW + FMT + """
local h = KEYS[1]
local status = redis.call('HGET', h, 'status')
if not status then
  if ARGV[1] ~= '1' then return {'missing'} end
  redis.call('HSET', h, 'task', '', 'args', '[]', 'kwargs', '{}', 'options', '{}',
             'created', fmt(now), 'token', '0', 'rec', '0')
elseif status == 'SUCCEEDED' or status == 'CANCELLED' then
  return {'state', status}
end
redis.call('HINCRBY', h, 'token', 1)
redis.call('HSET', h, 'status', 'CANCELLED', 'owner', '', 'lease', '', 'due', '', 'nb', '',
           'finished', fmt(now), 'updated', fmt(now))
return {'ok', redis.call('HGETALL', h)}
"""

# KEYS[1] the idempotency key (a global key). ARGV: run id, ttl (milliseconds).
IDEMPOTENCY = """
local bound = redis.call('GET', KEYS[1])
if bound then return bound end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""

# KEYS[1] parent run hash. ARGV: grace. Counts the notice ('cdone'); resumes a parent
# parked at its children once the count reaches the 'cneed' it parked with.
NOTIFY = NOW + FMT + FINISHED + """
local h = KEYS[1]
local v = redis.call('HMGET', h, 'status', 'wkind', 'wres', 'wid', 'cneed')
if not v[1] or finished[v[1]] then return {'no'} end
local done = redis.call('HINCRBY', h, 'cdone', 1)
if v[1] == 'WAITING' and v[2] == 'children' and (not v[3] or v[3] == '')
   and done >= (tonumber(v[5] or '') or 0) then
  redis.call('HSET', h, 'wres', cjson.encode({how='child', wid=v[4]}), 'status', 'PENDING',
             'nb', '', 'due', fmt(now + tonumber(ARGV[1])), 'updated', fmt(now))
  return {'publish', redis.call('HGETALL', h)}
end
return {'no'}
"""

# KEYS[1] run hash. ARGV: token, position ('' = no step), meta, value,
# wait step key, wait position, wait id, recheck (seconds), need.
SUSPEND_CHILDREN = NOW + FMT + HOLDS + """
local h = KEYS[1]
if not holds(h, ARGV[1]) then return 'lost' end
if ARGV[2] ~= '' then
  redis.call('HSET', h, 'c:' .. ARGV[2], ARGV[3], 'v:' .. ARGV[2], ARGV[4])
end
if (tonumber(redis.call('HGET', h, 'cdone') or '') or 0) >= tonumber(ARGV[9]) then
  return 'notice'
end
redis.call('HSET', h, 'status', 'WAITING', 'owner', '', 'lease', '', 'nb', '',
           'due', fmt(now + tonumber(ARGV[8])), 'updated', fmt(now),
           'wkind', 'children', 'wstep', ARGV[5], 'wpos', ARGV[6], 'wid', ARGV[7],
           'wuntil', '', 'wname', '', 'wkey', '', 'wafter', '0', 'wres', '', 'cneed', ARGV[9])
return 'parked'
"""

# KEYS: holders (zset run id -> slot expiry), queue (zset run id -> FIFO order),
# queue expiry (zset run id -> expiry); one hash tag. Drops what expired.
_CLEAN = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', fmt(now))) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
"""

# ARGV: run id, limit, ttl. Returns 1 (holds a slot) or 0 (queued).
ACQUIRE = NOW + FMT + _CLEAN + """
local id, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local keep = math.ceil((2 * ttl + 60) * 1000)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], keep) end
if redis.call('ZSCORE', KEYS[1], id) then
  redis.call('ZADD', KEYS[1], fmt(now + ttl), id)
  return 1
end
local free = limit - redis.call('ZCARD', KEYS[1])
local rank = redis.call('ZRANK', KEYS[2], id)
local ahead = rank or redis.call('ZCARD', KEYS[2])
if free > 0 and ahead < free then
  redis.call('ZADD', KEYS[1], fmt(now + ttl), id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  return 1
end
if not rank then redis.call('ZADD', KEYS[2], fmt(now), id) end
redis.call('ZADD', KEYS[3], fmt(now + 2 * ttl), id)
return 0
"""

# ARGV: run id, limit. Returns the queued run ids that may take the free slots.
RELEASE = NOW + FMT + _CLEAN + """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free <= 0 then return {} end
return redis.call('ZRANGE', KEYS[2], 0, free - 1)
"""

# KEYS[1] holders. ARGV: ttl, run ids... Extends the slots still held.
RENEW_SLOTS = NOW + FMT + """
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], fmt(now + tonumber(ARGV[1])), ARGV[i])
  end
end
return 1
"""

# KEYS[1] run hash. ARGV: finished-before cutoff, then the statuses to purge.
# Deletes the run if it is in one of them and finished before the cutoff: 1 deleted,
# 0 kept, -1 gone already.
PURGE = """
local v = redis.call('HMGET', KEYS[1], 'status', 'finished')
if not v[1] then return -1 end
local fin = tonumber(v[2] or '')
if not fin or fin >= tonumber(ARGV[1]) then return 0 end
for i = 2, #ARGV do
  if v[1] == ARGV[i] then
    redis.call('DEL', KEYS[1])
    return 1
  end
end
return 0
"""

NAMES = ("CREATE", "CANCEL", "IDEMPOTENCY", "NOTIFY", "SUSPEND_CHILDREN", "ACQUIRE", "RELEASE",
         "RENEW_SLOTS", "PURGE")
