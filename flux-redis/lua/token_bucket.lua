-- token_bucket.lua: up to burst tokens refilled continuously (flux-core policy.rs).
--
-- KEYS[1] the storage key; ARGV as in common.lua (uses now, cost, burst,
-- unit, rate; max_wait is 0).
-- Stored: "tokens last", tokens in scaled units (capacity - level) at `last` µs.
-- Refill is continuous and nothing is rounded away: traffic faster than one
-- token per interval still refills.
-- Reply: {allowed, limit, remaining, reset_after_us, retry_after_us, delay_us}
--
-- Example: 10 per second, burst 10 (unit 100000, rate 1), first call at t=5:
--   EVALSHA <sha> 1 flux:api:token_bucket:<digest> 5 1 10 1000000 10 100000 1 0
--   -> {1, 10, 9, 100000, 0, 0}

local level = 0
local tokens, last = load()
if tokens then
  level = drain(capacity - math.min(tokens, capacity), last)
end
return bucket(level, function(after)
  return int(sub0(capacity, after)) .. ' ' .. int(now)
end)
