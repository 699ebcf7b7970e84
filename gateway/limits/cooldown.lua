-- cooldown.lua: shared cooldowns of upstream targets in one sorted set (score = until, ms).
--
-- KEYS[1]  the cooldown sorted set
-- ARGV[1]  op: "trip" | "read" | "clear"
-- ARGV[2]  trip: target; clear: target
-- ARGV[3]  trip: duration in ms
-- ARGV[4]  now in ms ("" or absent = the server's TIME; a value is for tests only)
-- Returns {server_now_ms, target1, until1_ms, target2, until2_ms, ...} for "read" (only
-- targets still cooling), {server_now_ms} otherwise. Ended entries are removed; the key's
-- PX expiry follows the latest end, so an idle set disappears by itself.

local now
if ARGV[4] and ARGV[4] ~= '' then
  now = math.floor(tonumber(ARGV[4]))
else
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
end
local key, op = KEYS[1], ARGV[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if op == 'trip' then
  local untl = now + math.ceil(tonumber(ARGV[3]))
  redis.call('ZADD', key, 'GT', untl, ARGV[2])
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIRE', key, math.max(1, tonumber(last[2]) - now)) end
  return {now}
elseif op == 'clear' then
  redis.call('ZREM', key, ARGV[2])
  return {now}
end
local out = {now}
local rows = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
for i = 1, #rows, 2 do
  local n = #out
  out[n + 1], out[n + 2] = rows[i], math.floor(tonumber(rows[i + 1]))
end
return out
