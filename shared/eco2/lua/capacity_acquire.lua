-- Takes one call slot of a model's shared budget, or says how long to wait for one.
-- KEYS[1] in-flight leases (ZSET: lease id scored by expiry, ms), KEYS[2] the next call's earliest time (ms),
-- KEYS[3] pause (the ms time until which the provider asked everyone to wait).
-- ARGV: lease id, lease ms, max in flight for this call (0: no cap; new scans get less than the whole cap, so
-- that work past vision keeps slots), requests per minute (0: no cap).
-- Returns {1, 0} when the slot is taken, {0, ms to wait} when not. Redis's clock: every replica sees one time.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local paused_until = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused_until > now then
  return {0, paused_until - now}
end
local max_inflight = tonumber(ARGV[3])
if max_inflight > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= max_inflight then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    -- A slot comes back at a release (any moment) or at the earliest lease's expiry at the latest.
    return {0, math.min(tonumber(first[2]) - now, 50)}
  end
end
local rpm = tonumber(ARGV[4])
if rpm > 0 then
  -- A smooth rate, not a per-minute count: one call every 60000/rpm ms (and one ms more, so a provider that
  -- counts a rolling window with both ends in it never sees one call too many). KEYS[2] holds the theoretical
  -- arrival time of the next call (GCRA): a burst at the start of a minute would be refused by a provider that
  -- also limits per second, as OpenAI-compatible ones do.
  local interval = math.floor(60000 / rpm) + 1
  local tat = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
  if tat > now then
    return {0, tat - now}
  end
  redis.call('SET', KEYS[2], tat + interval, 'PX', interval + 60000)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return {1, 0}
