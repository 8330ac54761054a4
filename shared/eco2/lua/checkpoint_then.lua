-- After checkpoint_store, in checkpoint_transition: when this delivery's output is the one stored, the stage's
-- streamed pieces, then its transition (job_transition) on the keys and arguments that follow the checkpoint's.
if stored ~= ARGV[2] then return {'other', stored} end
local last = 5 + 2 * tonumber(ARGV[5])
local K, A = {KEYS[3], KEYS[4], KEYS[5]}, {unpack(ARGV, last + 1)}
append_deltas(K[1], K[2], A[1], A[6], A[7], 'mark:' .. A[1] .. ':' .. A[2], 6, last)
