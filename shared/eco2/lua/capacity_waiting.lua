-- Tells a job's SSE stream (and GET /result, field `capacity_wait`) that its model call waits for capacity: one
-- stream entry with the job's current stage, status and progress unchanged (the app may ignore it: nothing moved),
-- nothing if it ended. KEYS[1] job hash, KEYS[2] job stream. ARGV: the waiting call's stage (in the wait's JSON
-- already), the wait's JSON, now (seconds).
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'done' or status == 'failed' or status == 'cancelled' then
  return 0
end
local progress = redis.call('HGET', KEYS[1], 'progress') or '0'
local stage = redis.call('HGET', KEYS[1], 'stage') or 'queued'
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'capacity_wait', ARGV[2])
redis.call('XADD', KEYS[2], seq .. '-0', 'seq', seq, 'stage', stage, 'status', status, 'progress', progress,
  'message', 'waiting for model capacity', 'data', '{"waiting_for_capacity":' .. ARGV[2] .. '}', 'at', ARGV[3])
return seq
