-- KEYS: job hash, checkpoints hash, lease. ARGV: stage, lease token, lease ttl ms, '1' to answer 'ended' for an
-- ended job. The start of a stage in one round trip: the ended-job check, the stored output, else the lease.
-- Returns {'ended', ''}, {'cached', json}, {'leased', ''} (this caller computes) or {'busy', ''} (another does).
local current = redis.call('HGET', KEYS[1], 'status')
if ARGV[4] == '1' and ended(current) then return {'ended', ''} end
local cached = redis.call('HGET', KEYS[2], ARGV[1])
if cached then return {'cached', cached} end
if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', tonumber(ARGV[3])) then return {'leased', ''} end
return {'busy', ''}
