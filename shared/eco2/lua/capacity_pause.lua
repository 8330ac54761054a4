-- The provider refused a call (429): pauses the model for every replica until the provider says (never shortening
-- a longer pause), and doubles the interval between requests (capped at a minute) when a rate is configured: the
-- provider allows less than the budget thought, so the budget sends less until calls go through again
-- (capacity_acquire eases it back by a tenth per call taken). Headers that only say a limit is used up pause.
-- KEYS: 1 pause key, 2 the learned ms between requests. ARGV: 1 pause ms, 2 the configured ms between requests
-- (0: no rate configured, nothing learned), 3 "1" to learn (a refusal), "0" to pause only.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local LEARNED_TTL = 600000
local base = tonumber(ARGV[2])
if base > 0 and ARGV[3] == '1' then
  local learned = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), base)
  -- Refusals of calls sent together count once: not again within one learned interval of the last doubling
  -- (the key's age, read off its TTL).
  if redis.call('PTTL', KEYS[2]) < LEARNED_TTL - learned then
    redis.call('SET', KEYS[2], math.min(learned * 2, 60000), 'PX', LEARNED_TTL)
  end
end
local wanted = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if wanted > current then
  redis.call('SET', KEYS[1], wanted, 'PX', tonumber(ARGV[1]) + 1000)
  return wanted
end
return current
