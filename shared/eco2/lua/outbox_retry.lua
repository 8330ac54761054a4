-- KEYS: outbox. ARGV: job id, delay ms. Only an entry still there is rescheduled (a 2xx may have removed it).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
