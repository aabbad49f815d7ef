-- bucket.lua: what gcra, token_bucket and leaky_bucket share (flux-core
-- policy.rs, `bucket`). Follows common.lua; the policy's file follows it.
--
-- ARGV[2..5]: burst, unit, rate, max_wait_us; then one cost per key.
--   burst: the most calls of cost 1 the bucket holds
--   unit:  scaled units one call of cost 1 weighs (period_us / gcd)
--   rate:  scaled units drained per microsecond (requests / gcd)
--   max_wait_us: how long a leaky_bucket call may be delayed (0 otherwise)
--
-- Each meters a level in scaled units: a call of cost c adds c * unit, the
-- level drains by `rate` per microsecond, and a call fits when the level after
-- it is at most capacity = burst * unit (plus max_wait * rate of queue). They
-- differ only in what they store, so the policy's file gives the level now
-- and stores the level after.

local burst, unit, rate, max_wait = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local capacity = burst * unit
-- The highest level an admitted call may leave: capacity plus what drains
-- within max_wait. `remaining` counts the calls that still fit under it.
local room = capacity + max_wait * rate

-- `level` stored at `last`, drained until now. The product can pass 2^53 and
-- lose precision, but only when it is far above any level, so the result is 0
-- either way.
local function drain(level, last)
  return sub0(level, sub0(now, last) * rate)
end

-- Answers one call at the key's `level`. When it is admitted, returns the
-- level after it and the microseconds until that drains to 0.
local function bucket(level, cost)
  local after = level + cost * unit
  -- What `remaining` counts down from: burst plus the queue (policy.rs).
  local limit = idiv(room, unit)
  -- Microseconds until `after` drains down to capacity: 0 when it fits now.
  local wait = ceil_div(sub0(after, capacity), rate)
  if wait > max_wait then
    answer(0, limit, idiv(sub0(room, level), unit), ceil_div(level, rate), wait - max_wait, 0)
    return nil
  end
  local reset_after = ceil_div(after, rate)
  answer(1, limit, idiv(sub0(room, after), unit), reset_after, 0, wait)
  return after, reset_after
end
