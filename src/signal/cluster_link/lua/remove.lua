-- ARGV: rid, mid, bizid, event. Drops a stream of bizid and publishes the
-- event (nothing when it is not there: the link was down when it began).
local rid, mid, bizid = ARGV[1], ARGV[2], ARGV[3]
local v = redis.call('HGET', streams_key(rid), mid)
if v and cjson.decode(v).bizid == bizid then
  redis.call('HDEL', streams_key(rid), mid)
  redis.call('PUBLISH', P .. 'events', ARGV[4])
end
return 1
