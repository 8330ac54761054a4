-- KEYS: job hash, outbox, events, attempts. ARGV: job id, event json, lease ms. Queued after the job's
-- create in the same MULTI: the job's `outboxed` flag tells a new job from a repeat, which adds nothing.
if redis.call('HSETNX', KEYS[1], 'outboxed', '1') == 0 then return 0 end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
