"""The job store's Redis scripts: each state change is one atomic script."""

from __future__ import annotations

from collections.abc import Iterable

# K: job hash, job event stream, claim key (optional). A: stage, status, progress, message, data json, ttl, now,
# user_id, job_id, create ('1' makes a missing job), expected stage ('' = any), claim value, claim ttl, then
# field/value pairs to set on the hash (result, error, ...). K and A are KEYS and ARGV, or the part of them that is
# the transition's when it runs after a checkpoint write (checkpoint_transition_script). ENDED: the test for an
# ended job.
_TRANSITION = """
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
if ENDED or (A[11] ~= '' and at ~= A[11]) then
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
"""


# A delta is one piece of a stage's streamed text: it takes the next seq (so SSE order and Last-Event-ID resume hold)
# but changes neither status nor progress, and carries its own status 'delta' plus an index: (stage, index) is
# recorded once, and none once the stage recorded its result (`mark`, e.g. 'mark:answer:running'). Several pieces
# may come in one call (one round trip), each still its own entry: (index, data json) pairs, ARGV[first..last].
_APPEND_DELTAS = """
local function append_deltas(job, stream, stage, ttl, now, mark, first, last)
  local current = redis.call('HGET', job, 'status')
  if not current then return 'missing', 0 end
  if ENDED then return 'refused', 0 end
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
"""
# KEYS: job hash, job event stream. ARGV: stage, ttl, now, the mark that closes the stage's deltas, then the pieces.
_DELTA = """
local outcome, seq = append_deltas(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 5, #ARGV)
return {outcome, seq}
"""


def _ended(script: str, terminal: Iterable[str]) -> str:
    return script.replace("ENDED", " or ".join(f"current == '{status}'" for status in sorted(terminal)))


def transition_script(terminal: Iterable[str]) -> str:
    """The transition script with the job's ended statuses written in (they live in one place: eco2.jobs)."""
    return _ended("local K, A = KEYS, ARGV" + _TRANSITION, terminal)


def delta_script(terminal: Iterable[str]) -> str:
    """The delta script (one streamed piece of text), with the job's ended statuses written in."""
    return _ended(_APPEND_DELTAS + _DELTA, terminal)


# KEYS: job hash, checkpoints hash, lease. ARGV: stage, lease token, lease ttl ms, '1' to answer 'ended' for an
# ended job. The start of a stage in one round trip: the ended-job check, the stored output, else the lease.
# Returns {'ended', ''}, {'cached', json}, {'leased', ''} (this caller computes) or {'busy', ''} (another does).
_BEGIN = """
local current = redis.call('HGET', KEYS[1], 'status')
if ARGV[4] == '1' and (ENDED) then return {'ended', ''} end
local cached = redis.call('HGET', KEYS[2], ARGV[1])
if cached then return {'cached', cached} end
if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', tonumber(ARGV[3])) then return {'leased', ''} end
return {'busy', ''}
"""


def begin_script(terminal: Iterable[str]) -> str:
    """The stage-start script, with the job's ended statuses written in."""
    return _ended(_BEGIN, terminal)


# KEYS: checkpoints hash, lease (optional). ARGV: stage, json, ttl, lease token. First writer wins; everyone gets
# the winner's value; the lease is released in the same step, by its holder only.
_STORE = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
if KEYS[2] and redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
local stored = redis.call('HGET', KEYS[1], ARGV[1])
"""
CHECKPOINT = _STORE + "return stored\n"


def checkpoint_transition_script(terminal: Iterable[str]) -> str:
    """A stage's output stored (CHECKPOINT) and its transition recorded in one step: one round trip for both, and
    for the last pieces of its streamed text, appended just before the transition.

    KEYS: checkpoints hash, lease, then the transition's keys. ARGV: CHECKPOINT's four; the number of pieces, the
    pieces ((index, data json) pairs, as the delta script takes them; closed by the transition's own mark); then
    the transition's. Returns {'other', stored json} when another delivery's output was stored first (its
    transition is then the caller's to record, from that output), else the transition's reply.
    """
    then = """if stored ~= ARGV[2] then return {'other', stored} end
local last = 5 + 2 * tonumber(ARGV[5])
local K, A = {KEYS[3], KEYS[4], KEYS[5]}, {unpack(ARGV, last + 1)}
append_deltas(K[1], K[2], A[1], A[6], A[7], 'mark:' .. A[1] .. ':' .. A[2], 6, last)"""
    return _ended(_APPEND_DELTAS + _STORE + then + _TRANSITION, terminal)


# KEYS: lease. ARGV: token. Only the holder may release its lease.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: job hash, job event stream. ARGV: the stage the job failed at, the stage to wait at again, message,
# data json, ttl, now. Reopens a failed job for a replay: `failed → queued`, recorded on its stream like any
# transition. Only a job that failed at that stage is reopened (a second replay of the same letter, or a job
# that failed elsewhere, is refused); every `mark:<stage>:failed` is cleared so the job can fail again, and
# the hash is put back at the stage that waits for the replayed event, so the stages and the dead-letter sink
# treat the replayed event as the job's live work once more.
REOPEN = """
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
"""
