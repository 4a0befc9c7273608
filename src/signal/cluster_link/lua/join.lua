-- ARGV: rid, uid, bizid, cap. Enters uid unless cap others are in the room
-- (on live nodes) or uid is in it through another live node.
-- Returns {'ok', order, members, streams}, {'full'} or {'taken', bizid}.
local rid, uid, bizid, cap = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local r = room(rid)
local members, others = {}, 0
for i = 1, #r[2], 2 do
  if r[2][i] == uid then
    local there = cjson.decode(r[2][i + 1]).bizid
    if there ~= bizid then return {'taken', there} end
  else
    others = others + 1
    members[#members + 1] = r[2][i]
    members[#members + 1] = r[2][i + 1]
  end
end
if others >= cap then return {'full'} end
local order = redis.call('INCR', P .. 'room:' .. rid .. ':seq')
redis.call('HSET', peers_key(rid), uid, cjson.encode({bizid = bizid, order = order}))
redis.call('SADD', P .. 'rooms-of:' .. bizid, rid)
redis.call('PUBLISH', P .. 'events',
  cjson.encode({t = 'join', rid = rid, uid = uid, bizid = bizid, order = order}))
return {'ok', order, members, r[3]}
