-- Pauses a model for every replica until the provider says (a 429's retry-after): never shortens a longer pause.
-- KEYS[1] pause key. ARGV[1] pause length in ms.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local wanted = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if wanted > current then
  redis.call('SET', KEYS[1], wanted, 'PX', tonumber(ARGV[1]) + 1000)
  return wanted
end
return current
