-- KEYS: job hash, job event stream. ARGV: the stage the job failed at, the stage to wait at again, message,
-- data json, ttl, now. Reopens a failed job for a replay: `failed → queued`, recorded on its stream like any
-- transition. Only a job that failed at that stage is reopened (a second replay of the same letter, or a job
-- that failed elsewhere, is refused); every `mark:<stage>:failed` is cleared so the job can fail again, and
-- the hash is put back at the stage that waits for the replayed event, so the stages and the dead-letter sink
-- treat the replayed event as the job's live work once more.
local job, stream = KEYS[1], KEYS[2]
local current = redis.call('HGET', job, 'status')
local at = redis.call('HGET', job, 'stage') or ''
if not current then return {'missing', 0, '', ''} end
if current ~= 'failed' or at ~= ARGV[1] then
  return {'refused', tonumber(redis.call('HGET', job, 'seq') or '0'), current, at}
end
for _, field in ipairs(redis.call('HKEYS', job)) do
  if string.match(field, '^mark:.*:failed$') then redis.call('HDEL', job, field) end
end
local seq = redis.call('HINCRBY', job, 'seq', 1)
local progress = redis.call('HGET', job, 'progress') or '0'
redis.call('HDEL', job, 'error')
redis.call('HINCRBY', job, 'reopened', 1)
redis.call('HSET', job, 'status', 'queued', 'stage', ARGV[2], 'message', ARGV[3], 'updated_at', ARGV[6])
redis.call('XADD', stream, seq .. '-0', 'seq', seq, 'stage', ARGV[2], 'status', 'queued',
  'progress', progress, 'message', ARGV[3], 'data', ARGV[4], 'at', ARGV[6])
redis.call('EXPIRE', job, tonumber(ARGV[5]))
redis.call('EXPIRE', stream, tonumber(ARGV[5]))
return {'applied', seq, 'queued', ARGV[2]}
