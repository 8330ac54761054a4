-- KEYS: bucket hash, charge marker. ARGV: capacity, refill per second, cost, has key (0|1),
-- key TTL. Redis's clock, so every replica agrees. Returns {verdict, seconds to wait as a string} (Lua
-- numbers would be truncated to integers). A refused first submit un-marks its charge, so its
-- next repeat pays again.
local capacity, rate, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local keyed = ARGV[4] == '1'
if keyed and not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[5]) then return {'paid', ''} end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(bucket[1]) or capacity
local last = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - last) * rate)
local verdict, wait = 'allowed', 0
if tokens >= cost then
  tokens = tokens - cost
else
  verdict, wait = 'refused', (cost - tokens) / rate
  if keyed then redis.call('DEL', KEYS[2]) end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return {verdict, tostring(wait)}
