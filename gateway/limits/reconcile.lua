-- reconcile.lua: settle one slot group of a reservation (or undo it entirely).
--
-- KEYS[1..L]      token-bucket hash of each limited scope (fields r, t, ts)
-- KEYS[L+1..L+Q]  quota hash of each quota for the reservation's period
-- ARGV[1]         now in ms ("" = the server's TIME; a value is for tests only)
-- ARGV[2] L, ARGV[3] Q
-- ARGV[4]         token delta: actual - estimate (negative gives tokens back)
-- ARGV[5]         requests to give back (1 to undo the reservation, else 0)
-- ARGV[4+2i], ARGV[5+2i]        rpm_i, tpm_i (-1 = no limit on that dimension)
-- ARGV[6+2L+4(j-1)] .. (+3)     tokens_j, usd_j, requests_j to add (strings), expire_at_j
-- Returns 1. Buckets are refilled to now first and capped at their limit after the change;
-- a bucket may go negative (later requests then wait for the refill).

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) * 1000 + tonumber(tm[2]) / 1000
end
local L, Q = tonumber(ARGV[2]), tonumber(ARGV[3])
local delta, back = tonumber(ARGV[4]), tonumber(ARGV[5])

local function settle(stored, cap, elapsed, change)
  local v = cap
  if stored then
    v = stored + elapsed * cap / 60000
    if v > cap then v = cap end
  end
  v = v + change
  if v > cap then v = cap end
  return v
end

for i = 1, L do
  local rpm, tpm = tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])
  if (tpm >= 0 and delta ~= 0) or (rpm >= 0 and back ~= 0) then
    local v = redis.call('HMGET', KEYS[i], 'r', 't', 'ts')
    local last = tonumber(v[3]) or now
    local elapsed = now - last
    if elapsed < 0 then elapsed = 0 end
    local stamp = now
    if last > now then stamp = last end
    local fields, full_ms = {'ts', stamp}, 0
    if rpm >= 0 then
      local nr = settle(tonumber(v[1]), rpm, elapsed, back)
      fields[#fields + 1], fields[#fields + 2] = 'r', nr
      if rpm > 0 then full_ms = (rpm - nr) * 60000 / rpm end
    end
    if tpm >= 0 then
      local nt = settle(tonumber(v[2]), tpm, elapsed, -delta)
      fields[#fields + 1], fields[#fields + 2] = 't', nt
      if tpm > 0 then full_ms = math.max(full_ms, (tpm - nt) * 60000 / tpm) end
    end
    redis.call('HSET', KEYS[i], unpack(fields))
    redis.call('PEXPIRE', KEYS[i], math.ceil(full_ms) + 1000)
  end
end
for j = 1, Q do
  local a = 6 + 2 * L + 4 * (j - 1)
  local k = KEYS[L + j]
  if ARGV[a] ~= '0' then redis.call('HINCRBY', k, 'tok', ARGV[a]) end
  if ARGV[a + 1] ~= '0' then redis.call('HINCRBYFLOAT', k, 'usd', ARGV[a + 1]) end
  if ARGV[a + 2] ~= '0' then redis.call('HINCRBY', k, 'req', ARGV[a + 2]) end
  if ARGV[a + 3] ~= '0' then redis.call('EXPIREAT', k, ARGV[a + 3]) end
end
return 1
