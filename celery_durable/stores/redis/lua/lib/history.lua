-- A run's history: a list beside its hash (KEYS[2] of the scripts that write it), never
-- read by a delivery. Entries are the JSON of records.HistoryEntry; the last 1,000 are kept.
local function note(hk, kind, at, detail)
  redis.call('RPUSH', hk, cjson.encode({kind = kind, at = at, detail = detail}))
  redis.call('LTRIM', hk, -1000, -1)
end
local function note_attempt(hk, at, pos, meta)
  redis.call('RPUSH', hk, '{"kind":"attempt","at":' .. string.format('%.6f', at) ..
             ',"pos":' .. pos .. ',"step":' .. meta .. '}')
  redis.call('LTRIM', hk, -1000, -1)
end
local function lost_note(owner, then_what)
  if not owner or owner == '' then owner = '(unknown)' end
  return 'worker ' .. owner .. ' lost (its lease expired); ' .. then_what
end
