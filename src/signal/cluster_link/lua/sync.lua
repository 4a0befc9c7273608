-- ARGV: bizid, state (JSON: [{rid, uids: [...], streams: [entry JSON...]}]).
-- Replaces everything Redis has of bizid by state, publishes a sync event
-- and returns those rooms as they then are.
local bizid = ARGV[1]
local set = P .. 'rooms-of:' .. bizid
for _, rid in ipairs(redis.call('SMEMBERS', set)) do drop_node_in(rid, bizid) end
redis.call('DEL', set)
local out = {}
for _, r in ipairs(cjson.decode(ARGV[2])) do
  for _, uid in ipairs(r.uids) do
    local order = redis.call('INCR', P .. 'room:' .. r.rid .. ':seq')
    redis.call('HSET', peers_key(r.rid), uid, cjson.encode({bizid = bizid, order = order}))
  end
  for _, s in ipairs(r.streams) do
    redis.call('HSET', streams_key(r.rid), cjson.decode(s).mid, s)
  end
  redis.call('SADD', set, r.rid)
  out[#out + 1] = room(r.rid)
end
redis.call('PUBLISH', P .. 'events', cjson.encode({t = 'sync', bizid = bizid}))
return out
