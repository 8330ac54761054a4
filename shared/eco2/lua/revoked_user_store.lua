-- Revoke a user's tokens issued at or before ARGV[1] (unix seconds) until ARGV[2] (unix ms): a later cut-off
-- replaces an earlier one, never the other way round, so applying revocations in any order, or twice, ends the same.
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= held then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
