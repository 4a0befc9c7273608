-- Shared by every script of wren's cluster (src/signal/cluster_link/lua).
-- Keys: wren:node:BIZID (a node's heartbeat, expiring), wren:rooms-of:BIZID
-- (the rooms where a node has entries), wren:room:RID:peers (uid -> JSON
-- {bizid, order}), wren:room:RID:streams (mid -> JSON stream entry),
-- wren:room:RID:seq (the room's join counter). Events go to wren:events.
-- Scripts take no KEYS: wren runs on one Redis, not a Redis Cluster.
local P = 'wren:'
local alive = {}
-- Whether a node's heartbeat key exists (asked once per node per script).
local function live(bizid)
  if alive[bizid] == nil then
    alive[bizid] = redis.call('EXISTS', P .. 'node:' .. bizid) == 1
  end
  return alive[bizid]
end
local function peers_key(rid) return P .. 'room:' .. rid .. ':peers' end
local function streams_key(rid) return P .. 'room:' .. rid .. ':streams' end
-- A room as it is: {rid, {uid, json, uid, json, ...}, {stream json, ...}}.
-- Entries of dead nodes are deleted on the way.
local function room(rid)
  local members, streams = {}, {}
  local h = redis.call('HGETALL', peers_key(rid))
  for i = 1, #h, 2 do
    if live(cjson.decode(h[i + 1]).bizid) then
      members[#members + 1] = h[i]
      members[#members + 1] = h[i + 1]
    else
      redis.call('HDEL', peers_key(rid), h[i])
    end
  end
  h = redis.call('HGETALL', streams_key(rid))
  for i = 1, #h, 2 do
    if live(cjson.decode(h[i + 1]).bizid) then
      streams[#streams + 1] = h[i + 1]
    else
      redis.call('HDEL', streams_key(rid), h[i])
    end
  end
  if #members == 0 then
    redis.call('DEL', P .. 'room:' .. rid .. ':seq', streams_key(rid))
  end
  return {rid, members, streams}
end
-- Deletes every entry of `bizid` in `rid`.
local function drop_node_in(rid, bizid)
  for _, k in ipairs({peers_key(rid), streams_key(rid)}) do
    local h = redis.call('HGETALL', k)
    for i = 1, #h, 2 do
      if cjson.decode(h[i + 1]).bizid == bizid then redis.call('HDEL', k, h[i]) end
    end
  end
end
-- Forgets `rid` as a room of `bizid` when it has no entry there any more.
local function still_there(rid, bizid)
  for _, k in ipairs({peers_key(rid), streams_key(rid)}) do
    local h = redis.call('HVALS', k)
    for i = 1, #h do
      if cjson.decode(h[i]).bizid == bizid then return end
    end
  end
  redis.call('SREM', P .. 'rooms-of:' .. bizid, rid)
end
