-- Times and FIFO orders are formatted explicitly: Lua's tostring keeps only 14 digits.
local function fmt(x) return string.format('%.6f', x) end
