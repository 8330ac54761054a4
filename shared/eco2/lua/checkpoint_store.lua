-- KEYS: checkpoints hash, lease (optional). ARGV: stage, json, ttl, lease token. First writer wins; everyone gets
-- the winner's value; the lease is released in the same step, by its holder only.
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
if KEYS[2] and redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
local stored = redis.call('HGET', KEYS[1], ARGV[1])
