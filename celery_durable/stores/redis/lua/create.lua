-- uses: now fmt finished
-- KEYS[1] run hash, KEYS[2] its history, KEYS[3] its metadata. ARGV: task, args, kwargs,
-- options, parent, idempotency key, grace, replace_finished ('1': a finished run under this
-- id is replaced by the new one), tags (JSON list or ''), version, replay_of, then the
-- checkpoint fields a replay starts with (name, value, name, value, ...).
if redis.call('EXISTS', KEYS[1]) == 1 then
  local status = redis.call('HGET', KEYS[1], 'status')
  if ARGV[8] ~= '1' or not finished[status] then return 0 end
  -- its checkpoints, history, metadata and retention expiry go with it
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
end
redis.call('HSET', KEYS[1], 'task', ARGV[1], 'args', ARGV[2], 'kwargs', ARGV[3],
           'options', ARGV[4], 'parent', ARGV[5], 'ikey', ARGV[6], 'status', 'PENDING',
           'created', fmt(now), 'updated', fmt(now), 'token', '0', 'rec', '0',
           'due', fmt(now + tonumber(ARGV[7])), 'tags', ARGV[9], 'ver', ARGV[10],
           'replay_of', ARGV[11])
for i = 12, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
