-- ARGV: rid, uid, bizid, event. Takes uid out of rid if it is there for
-- bizid, with its streams, and publishes the event.
local rid, uid, bizid = ARGV[1], ARGV[2], ARGV[3]
local v = redis.call('HGET', peers_key(rid), uid)
if v and cjson.decode(v).bizid == bizid then
  redis.call('HDEL', peers_key(rid), uid)
  local h = redis.call('HGETALL', streams_key(rid))
  for i = 1, #h, 2 do
    if cjson.decode(h[i + 1]).uid == uid then redis.call('HDEL', streams_key(rid), h[i]) end
  end
  redis.call('PUBLISH', P .. 'events', ARGV[4])
end
if redis.call('HLEN', peers_key(rid)) == 0 then
  redis.call('DEL', P .. 'room:' .. rid .. ':seq', streams_key(rid))
end
still_there(rid, bizid)
return 1
