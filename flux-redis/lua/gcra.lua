-- gcra.lua: the Generic Cell Rate Algorithm (flux-core policy.rs).
--
-- KEYS[1] the storage key; ARGV as in common.lua (uses now, cost, burst,
-- unit, rate; max_wait is 0).
-- Stored: "tat frac", the theoretical arrival time tat + frac / rate (µs):
-- when the level reaches 0.
-- Reply: {allowed, limit, remaining, reset_after_us, retry_after_us, delay_us}
--
-- Example: 2 per second, burst 2 (unit 500000, rate 1), third call at t=0:
--   EVALSHA <sha> 1 flux:api:gcra:<digest> 0 1 2 1000000 2 500000 1 0
--   -> {0, 2, 0, 1000000, 500000, 0}

local level = 0
local tat, frac = load()
if tat and tat >= now then
  level = (tat - now) * rate + frac
end
return bucket(level, function(after)
  local whole = idiv(after, rate)
  return int(now + whole) .. ' ' .. int(after - whole * rate)
end)
