-- ARGV: rid, mid, bizid, entry, event. Records a stream of bizid and
-- publishes the event.
local rid, mid, bizid = ARGV[1], ARGV[2], ARGV[3]
redis.call('HSET', streams_key(rid), mid, ARGV[4])
redis.call('SADD', P .. 'rooms-of:' .. bizid, rid)
redis.call('PUBLISH', P .. 'events', ARGV[5])
return 1
