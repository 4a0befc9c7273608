-- ARGV: rids. Returns those rooms as they are.
local out = {}
for i = 1, #ARGV do out[i] = room(ARGV[i]) end
return out
