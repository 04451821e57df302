-- Event sequence numbers are integer microseconds of the server clock; they are
-- formatted with %.0f because Lua's tostring (and cjson) keep only 14 digits.
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function fmt(x) return string.format('%.0f', x) end
