-- A delta is one piece of a stage's streamed text: it takes the next seq (so SSE order and Last-Event-ID resume hold)
-- but changes neither status nor progress, and carries its own status 'delta' plus an index: (stage, index) is
-- recorded once, and none once the stage recorded its result (`mark`, e.g. 'mark:answer:running'). Several pieces
-- may come in one call (one round trip), each still its own entry: (index, data json) pairs, ARGV[first..last].
local function append_deltas(job, stream, stage, ttl, now, mark, first, last)
  local current = redis.call('HGET', job, 'status')
  if not current then return 'missing', 0 end
  if ended(current) then return 'refused', 0 end
  if redis.call('HEXISTS', job, mark) == 1 then return 'duplicate', 0 end
  local field = 'delta:' .. stage
  local expected = tonumber(redis.call('HGET', job, field) or '0')
  local progress = redis.call('HGET', job, 'progress') or '0'
  local outcome, seq = 'duplicate', 0
  for i = first, last, 2 do
    local index = tonumber(ARGV[i])
    if index >= expected then
      seq = redis.call('HINCRBY', job, 'seq', 1)
      expected = index + 1
      redis.call('XADD', stream, seq .. '-0', 'seq', seq, 'stage', stage, 'status', 'delta', 'progress', progress,
        'message', '', 'data', ARGV[i + 1], 'at', now, 'index', index)
      outcome = 'applied'
    end
  end
  if outcome == 'applied' then
    redis.call('HSET', job, field, expected)
    redis.call('EXPIRE', stream, tonumber(ttl))
  end
  return outcome, seq
end
