-- bucket.lua: the math gcra, token_bucket and leaky_bucket share (flux-core
-- policy.rs, `bucket`). Appended to common.lua; the policy's file follows.
--
-- Each meters a level in scaled units: a call of cost c adds c * unit, the
-- level drains by `rate` per microsecond, and a call fits when the level
-- after it is at most capacity = burst * unit. They differ only in what they
-- store, so the policy's file gives the level now and how to store a level.

local burst = tonumber(ARGV[5])
local unit = tonumber(ARGV[6])
local rate = tonumber(ARGV[7])
local max_wait = tonumber(ARGV[8])
local capacity = burst * unit
-- The highest level an admitted call may leave: capacity, plus what drains
-- within max_wait. `remaining` counts the calls that still fit under it.
local room = capacity + max_wait * rate

-- `level` stored at `last`, drained until now. The product can pass 2^53 and
-- lose precision, but only when it is far above any level, so the result is 0
-- either way.
local function drain(level, last)
  return sub0(level, sub0(now, last) * rate)
end

-- Decides with the key's level now; `encode(after)` gives the fields to store
-- for the level `after` the call.
local function bucket(level, encode)
  local after = level + cost * unit
  -- Microseconds until `after` drains down to capacity: 0 when it fits now.
  local wait = ceil_div(sub0(after, capacity), rate)
  if wait > max_wait then
    return {0, burst, idiv(sub0(room, level), unit), ceil_div(level, rate), wait - max_wait, 0}
  end
  local reset_after = ceil_div(after, rate)
  save(encode(after), reset_after)
  return {1, burst, idiv(sub0(room, after), unit), reset_after, 0, wait}
end
