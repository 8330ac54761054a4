-- Takes one call slot of a model's shared budget, or says how long to wait for one.
-- KEYS[1] in-flight leases (ZSET: lease id scored by expiry, ms), KEYS[2] request count of the current minute,
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
  local window = KEYS[2] .. ':' .. math.floor(now / 60000)
  local used = tonumber(redis.call('GET', window) or '0')
  if used >= rpm then
    return {0, 60000 - (now % 60000)}
  end
  redis.call('INCR', window)
  redis.call('PEXPIRE', window, 61000)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return {1, 0}
