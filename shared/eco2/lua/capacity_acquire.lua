-- Takes one call slot of a model's shared budget, or places the call in the model's queue and says how long to
-- wait before asking again. Calls are served in queue order, so a wait is as long as the queue ahead of it
-- (not a lottery among pollers), and the queue puts VIP calls first, then work already past vision, then new scans.
-- KEYS: 1 in-flight leases (ZSET: lease id scored by expiry, ms), 2 the next request's earliest time (ms),
-- 3 pause (the ms time until which the provider asked everyone to wait), 4 the queue (ZSET: call id scored by
-- class * 1e13 + the ms it arrived), 5 the queue's places (ZSET: call id scored by the ms its place lapses unless it
-- asks again), 6 the next token's earliest time (ms), 7 the learned ms between requests (tighter than configured
-- after the provider refused a call: capacity_pause).
-- ARGV: 1 call id, 2 lease ms, 3 max in flight for this call (0: no cap; new scans get less than the whole cap, so
-- that work past vision keeps slots), 4 requests per minute (0: no cap), 5 class (0 VIP, 1 past vision, 2 new scan),
-- 6 the longest ms a queued call sleeps before asking again, 7 tokens per minute (0: no cap), 8 this call's tokens
-- (estimate), 9 ms a place is kept past the time the call should have asked again.
-- Returns {1, 0, 0, 0} when the slot is taken, else {0, ms to wait, calls ahead, ms it would wait at the configured
-- rate} (the last is what decides a hopeless wait: a pace learned from a provider's passing cut lapses).
-- Redis's clock: one time for all, in ms with the microseconds as a fraction, so rates above a call per ms still
-- space calls apart.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + tonumber(now_parts[2]) / 1000
local function ms(value) return string.format('%.3f', value) end
local id = ARGV[1]

-- A call that stopped asking (its replica died, or it gave up without leaving) loses its place.
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 100)
if #lapsed > 0 then
  redis.call('ZREM', KEYS[4], unpack(lapsed))
  redis.call('ZREM', KEYS[5], unpack(lapsed))
end

local place = tonumber(redis.call('ZSCORE', KEYS[4], id) or (tonumber(ARGV[5]) * 1e13 + math.floor(now)))
local ahead = redis.call('ZCOUNT', KEYS[4], '-inf', '(' .. string.format('%.0f', place))
local wait, patient = 0, 0

local paused_until = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused_until > now then
  wait = paused_until - now
end

local max_inflight = tonumber(ARGV[3])
if max_inflight > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  local short = redis.call('ZCARD', KEYS[1]) + ahead - max_inflight + 1
  if short > 0 then
    -- A slot comes back at a release (any moment): ask again soon, later the further back the call stands.
    wait = math.max(wait, math.min(50 * short, 1000))
  end
end

patient = wait
local rpm = tonumber(ARGV[4])
local interval, tat = 0, now
if rpm > 0 then
  -- A smooth rate, not a per-minute count: one call every 60000/rpm ms (and 0.2 % more, so a provider that
  -- counts a rolling window with both ends in it never sees one call too many), or the longer interval learned
  -- from the provider's refusals. KEYS[2] holds the theoretical arrival time of the next call (GCRA).
  interval = math.max(60000 / rpm * 1.002, tonumber(redis.call('GET', KEYS[7]) or '0'))
  tat = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
  patient = math.max(patient, tat + ahead * 60000 / rpm * 1.002 - now)
  wait = math.max(wait, tat + ahead * interval - now)
end

local tpm = tonumber(ARGV[7])
local token_ms, token_tat = 0, now
if tpm > 0 then
  token_ms = 60000 / tpm * tonumber(ARGV[8])
  token_tat = math.max(tonumber(redis.call('GET', KEYS[6]) or '0'), now)
  wait = math.max(wait, token_tat + ahead * token_ms - now)
  patient = math.max(patient, token_tat + ahead * token_ms - now)
end

if wait > 0 then
  local keep = math.ceil(math.min(wait, tonumber(ARGV[6])) + tonumber(ARGV[9]))
  redis.call('ZADD', KEYS[4], 'NX', string.format('%.0f', place), id)
  redis.call('ZADD', KEYS[5], ms(now + keep), id)
  -- The queue lives as long as its longest-kept place: never shortened by a call told a shorter wait.
  for key = 4, 5 do
    if redis.call('PTTL', KEYS[key]) < keep then
      redis.call('PEXPIRE', KEYS[key], keep)
    end
  end
  return {0, math.ceil(wait), ahead, math.ceil(math.max(patient, 0))}
end

redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', KEYS[5], id)
if rpm > 0 then
  redis.call('SET', KEYS[2], ms(tat + interval), 'PX', math.ceil(interval) + 60000)
end
if tpm > 0 then
  redis.call('SET', KEYS[6], ms(token_tat + token_ms), 'PX', math.ceil(token_ms) + 60000)
end
if max_inflight > 0 then
  redis.call('ZADD', KEYS[1], ms(now + tonumber(ARGV[2])), id)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
end
return {1, 0, 0, 0}
