-- K: job hash, job event stream, claim key (optional). A: stage, status, progress, message, data json, ttl, now,
-- user_id, job_id, create ('1' makes a missing job), expected stage ('' = any), claim value, claim ttl, then
-- field/value pairs to set on the hash (result, error, ...). K and A are KEYS and ARGV, or the part of them that is
-- the transition's when it runs after a checkpoint write (checkpoint_transition_script). ended(status): whether a job
-- with that status has ended (defined ahead of the script, eco2.job_scripts).
local job, stream = K[1], K[2]
local stage, status, progress, message, data, ttl, now, user = A[1], A[2], tonumber(A[3]),
  A[4], A[5], tonumber(A[6]), A[7], A[8]
local mark = 'mark:' .. stage .. ':' .. status
local seen = redis.call('HGET', job, mark)
local current = redis.call('HGET', job, 'status')
local at = redis.call('HGET', job, 'stage') or ''
-- An event may change only the job it is part of: one naming another user than the job's is refused, whatever it is.
if current and redis.call('HGET', job, 'user_id') ~= user then
  return {'refused', tonumber(redis.call('HGET', job, 'seq') or '0'), current, at, 0}
end
if seen then return {'duplicate', tonumber(seen), current, at, 0} end
local claimed = 0
local function claim()
  if K[3] and redis.call('SET', K[3], A[12], 'NX', 'EX', tonumber(A[13])) then claimed = 1 end
end
if not current and A[10] ~= '1' then return {'missing', 0, '', '', 0} end
if ended(current) or (A[11] ~= '' and at ~= A[11]) then
  return {'refused', tonumber(redis.call('HGET', job, 'seq') or '0'), current, at, 0}
end
if not current then
  redis.call('HSET', job, 'job_id', A[9], 'user_id', user, 'created_at', now, 'priority', 'normal')
end
claim()
local seq = redis.call('HINCRBY', job, 'seq', 1)
local old = tonumber(redis.call('HGET', job, 'progress') or '0')
if progress < old then progress = old end
redis.call('HSET', job, mark, seq, 'status', status, 'stage', stage, 'progress', progress,
  'message', message, 'updated_at', now)
for i = 14, #A, 2 do redis.call('HSET', job, A[i], A[i + 1]) end
redis.call('XADD', stream, seq .. '-0', 'seq', seq, 'stage', stage, 'status', status,
  'progress', progress, 'message', message, 'data', data, 'at', now)
redis.call('EXPIRE', job, ttl)
redis.call('EXPIRE', stream, ttl)
return {'applied', seq, status, stage, claimed}
