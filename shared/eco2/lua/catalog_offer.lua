-- Replace the stored catalog only with a newer version: {applied (0/1), the version now stored}.
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local offered = tonumber(ARGV[1])
if offered <= current then return {0, current} end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'characters', ARGV[2])
return {1, offered}
