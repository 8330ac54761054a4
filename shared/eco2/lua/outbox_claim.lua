-- KEYS: outbox, events, attempts. ARGV: lease ms, batch size. Returns {id, event, attempts, ...}.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local claimed = {}
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
  local attempts = redis.call('HINCRBY', KEYS[3], id, 1)
  table.insert(claimed, id)
  table.insert(claimed, redis.call('HGET', KEYS[2], id) or '')
  table.insert(claimed, tostring(attempts))
end
return claimed
