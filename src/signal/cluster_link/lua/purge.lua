-- ARGV: bizid. Drops what Redis has of a dead node, unless it is alive
-- again (a new process syncs its own state).
local bizid = ARGV[1]
if live(bizid) then return 0 end
local set = P .. 'rooms-of:' .. bizid
for _, rid in ipairs(redis.call('SMEMBERS', set)) do
  drop_node_in(rid, bizid)
  room(rid)
end
redis.call('DEL', set)
return 1
