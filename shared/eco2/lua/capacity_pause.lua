-- Pauses a model for every replica until the provider says (never shortening a longer pause) and, for a refusal
-- (a 429) when a rate is configured, learns a longer interval between requests: the provider allows less than the
-- budget thought (a lowered tier, another client on the same key). The learned interval lapses LEARNED_MS after the
-- last refusal that set it (at least three intervals), and the configured rate is back: a provider still that slow
-- refuses once more and the interval is learned again.
-- KEYS: 1 pause key, 2 the learned ms between requests. ARGV: 1 pause ms, 2 the configured ms between requests
-- (0: no rate configured, nothing learned), 3 what to learn: 0 nothing (a used-up limit that only pauses), the ms
-- between requests the provider's headers imply, or -1 when they say nothing (then the interval doubles, once per
-- interval however many calls sent together were refused).
local LEARNED_MS = 10000
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local base, learn = tonumber(ARGV[2]), tonumber(ARGV[3])
if base > 0 and learn ~= 0 then
  local current = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), base)
  local wanted = learn
  if learn < 0 then
    local keep = math.max(LEARNED_MS, 3 * current)
    wanted = 0
    if redis.call('PTTL', KEYS[2]) < keep - current then
      wanted = math.min(current * 2, 60000)
    end
  end
  if wanted >= current then
    redis.call('SET', KEYS[2], string.format('%.3f', wanted), 'PX', math.ceil(math.max(LEARNED_MS, 3 * wanted)))
  end
end
local wanted = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if wanted > current then
  redis.call('SET', KEYS[1], wanted, 'PX', tonumber(ARGV[1]) + 1000)
  return wanted
end
return current
