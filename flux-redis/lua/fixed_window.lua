-- fixed_window.lua: requests per window of period that opens at the key's
-- first call (flux-core policy.rs).
--
-- KEYS[1] the storage key; ARGV as in common.lua (uses now, cost, requests,
-- period_us).
-- Stored: "count end", the calls counted and when the window ends (µs).
-- Reply: {allowed, limit, remaining, reset_after_us, retry_after_us, delay_us}
--
-- Example: 2 per second, third call 0.25 s after the first (at t=0):
--   EVALSHA <sha> 1 flux:api:fixed_window:<digest> 250000 1 2 1000000 2 500000 1 0
--   -> {0, 2, 0, 750000, 750000, 0}

local count, window_end = load()
if not (count and now < window_end) then
  count, window_end = 0, now + period
end
local reset_after = window_end - now
if count + cost > requests then
  -- sub0: a count stored under a higher limit (lowered in place) may exceed it.
  return {0, requests, sub0(requests, count), reset_after, reset_after, 0}
end
count = count + cost
save(int(count) .. ' ' .. int(window_end), reset_after)
return {1, requests, requests - count, reset_after, 0, 0}
