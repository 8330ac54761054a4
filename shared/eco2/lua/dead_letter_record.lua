-- KEYS: seen mark, dead-letter stream. ARGV: mark ttl, attributes json, data json, maxlen, recorded_at.
-- The entry is written before the mark: a failing XADD leaves no mark behind (scripts do not roll back).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'attributes', ARGV[2], 'data', ARGV[3],
  'recorded_at', ARGV[5])
redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[1]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[1]))
return 1
