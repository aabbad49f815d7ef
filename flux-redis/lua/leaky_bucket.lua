-- leaky_bucket.lua: a bucket of burst draining at requests / period; with
-- max_wait > 0 it shapes traffic (flux-core policy.rs).
--
-- KEYS[1] the storage key; ARGV as in common.lua (uses now, cost, burst,
-- unit, rate, max_wait_us).
-- Stored: "level last", the level in scaled units at `last` µs. A call that
-- would overflow but drains within max_wait is admitted with delay_us > 0:
-- the caller waits that long before running it.
-- Reply: {allowed, limit, remaining, reset_after_us, retry_after_us, delay_us}
--
-- Example: 1 per second, burst 1, max_wait 2 s, second call at t=0:
--   EVALSHA <sha> 1 flux:api:leaky_bucket:<digest> 0 1 1 1000000 1 1000000 1 2000000
--   -> {1, 1, 1, 2000000, 0, 1000000}   (one more call fits in the queue)

local level = 0
local stored, last = load()
if stored then
  level = drain(stored, last)
end
return bucket(level, function(after)
  return int(after) .. ' ' .. int(now)
end)
