-- acquire.lua: check, then consume, every token bucket and quota of one slot group atomically.
-- Algorithm: see gateway/limits/spec.py. Nothing is written unless everything accepts.
--
-- KEYS[1..L]      token-bucket hash of each limited scope (fields r, t, ts; absent = full)
-- KEYS[L+1..L+Q]  quota hash of each quota for its period (fields req, tok, usd)
-- ARGV[1]         now in ms ("" = the server's TIME; a value is for tests only)
-- ARGV[2]         space-separated numbers (one argument: cheaper to encode and send than many):
--                   L Q estimate  rpm_1 tpm_1 .. rpm_L tpm_L  tokens_1 usd_1 expire_at_1 ..
--                 rpm/tpm/tokens/usd -1 = no limit; expire_at unix seconds, 0 = never
-- Returns an array of 11 integers (hiredis builds the Python ints in C: cheaper for the
-- gateway, which is the busier process, than one string it splits and converts):
--   {status, index, retry_ms, rq_limit, rq_remaining, rq_reset_ms, tk_limit, tk_remaining,
--    tk_reset_ms, rq_index, tk_index}
--   status 0 accepted and consumed; 1 refused by limit `index` (the longest wait, retry_ms);
--   2 quota `index` already spent. rq_* / tk_*: the limit with the least left (-1 limit: none),
--   after consumption when accepted; rq_index / tk_index: which limit that is.

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local A = {}
for tok in string.gmatch(ARGV[2], '%S+') do A[#A + 1] = tok end
local L, Q, est = tonumber(A[1]), tonumber(A[2]), tonumber(A[3])
local rpm, tpm, r, t, ts = {}, {}, {}, {}, {}

local function refill(stored, cap, elapsed)
  if cap < 0 then return 0 end
  if not stored then return cap end
  local v = stored + elapsed * cap / 60000
  if v > cap then v = cap end
  return v
end

for i = 1, L do
  rpm[i], tpm[i] = tonumber(A[2 + 2 * i]), tonumber(A[3 + 2 * i])
  local v = redis.call('HMGET', KEYS[i], 'r', 't', 'ts')
  local last = tonumber(v[3])
  local elapsed = 0
  if last then
    elapsed = now - last
    if elapsed < 0 then elapsed = 0 end
    if last > now then ts[i] = last else ts[i] = now end
  else
    ts[i] = now
  end
  r[i] = refill(tonumber(v[1]), rpm[i], elapsed)
  t[i] = refill(tonumber(v[2]), tpm[i], elapsed)
end

local function reply(status, index, retry_ms, w)
  return {status, index, retry_ms, w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8]}
end

local function windows(dr, dt)
  local out = {-1, 0, 0, -1, 0, 0, 0, 0}
  local br, bt
  for i = 1, L do
    if rpm[i] > 0 then
      local lv = r[i] - dr
      if not br or lv < br then
        br = lv
        out[1], out[3], out[7] = rpm[i], math.ceil((rpm[i] - lv) * 60000 / rpm[i]), i
      end
    end
    if tpm[i] > 0 then
      local lv = t[i] - dt
      if not bt or lv < bt then
        bt = lv
        out[4], out[6], out[8] = tpm[i], math.ceil((tpm[i] - lv) * 60000 / tpm[i]), i
      end
    end
  end
  if br then out[2] = math.max(0, math.floor(br)) end
  if bt then out[5] = math.max(0, math.floor(bt)) end
  return out
end

-- quotas: refuse when the period's tokens or USD are already spent
for j = 1, Q do
  local a = 4 + 2 * L + 3 * (j - 1)
  local tl, ul = tonumber(A[a]), tonumber(A[a + 1])
  if tl >= 0 or ul >= 0 then
    local v = redis.call('HMGET', KEYS[L + j], 'tok', 'usd')
    if (tl >= 0 and (tonumber(v[1]) or 0) >= tl) or (ul >= 0 and (tonumber(v[2]) or 0) >= ul) then
      local w = windows(0, 0)
      return reply(2, j, 0, w)
    end
  end
end

-- limits: the scope that needs the longest wait refuses
local worst, wait = 0, 0
for i = 1, L do
  local need_ms = 0
  if rpm[i] >= 0 and r[i] < 1 then
    if rpm[i] == 0 then need_ms = 60000 else need_ms = (1 - r[i]) * 60000 / rpm[i] end
  end
  if tpm[i] >= 0 then
    local need = math.min(est, tpm[i])
    if t[i] < need then
      local w = 60000
      if tpm[i] > 0 then w = (need - t[i]) * 60000 / tpm[i] end
      if w > need_ms then need_ms = w end
    end
  end
  if need_ms > wait then worst, wait = i, need_ms end
end
if worst > 0 then
  local w = windows(0, 0)
  return reply(1, worst, math.ceil(wait), w)
end

-- consume
for i = 1, L do
  local fields, full_ms = {'ts', ts[i]}, 0
  if rpm[i] >= 0 then
    r[i] = r[i] - 1
    fields[#fields + 1], fields[#fields + 2] = 'r', r[i]
    if rpm[i] > 0 then full_ms = (rpm[i] - r[i]) * 60000 / rpm[i] end
  end
  if tpm[i] >= 0 then
    t[i] = t[i] - est
    fields[#fields + 1], fields[#fields + 2] = 't', t[i]
    if tpm[i] > 0 then full_ms = math.max(full_ms, (tpm[i] - t[i]) * 60000 / tpm[i]) end
  end
  redis.call('HSET', KEYS[i], unpack(fields))
  redis.call('PEXPIRE', KEYS[i], math.ceil(full_ms) + 1000)
end
for j = 1, Q do
  local a = 4 + 2 * L + 3 * (j - 1)
  redis.call('HINCRBY', KEYS[L + j], 'req', 1)
  if A[a + 2] ~= '0' then redis.call('EXPIREAT', KEYS[L + j], A[a + 2]) end
end
local w = windows(0, 0)
return reply(0, 0, 0, w)
