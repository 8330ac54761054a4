-- KEYS: job hash, job event stream. ARGV: stage, ttl, now, the mark that closes the stage's deltas, then the pieces.
local outcome, seq = append_deltas(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 5, #ARGV)
return {outcome, seq}
