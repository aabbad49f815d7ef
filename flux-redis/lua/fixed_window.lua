-- fixed_window.lua: requests per window of period that opens at the key's
-- first call (flux-core policy.rs).
--
-- KEYS: one storage key per call, {prefix}{scope}:fixed_window:{digest}
-- ARGV: now_us or '' (Redis TIME), requests, period_us, then one cost per key
-- Stored: "count end", the calls counted and when the window ends (µs)
-- Reply: six integers per key (common.lua)
--
-- Example: 2 per second, a third call 0.25 s after the first (at t=0):
--   EVALSHA <sha> 1 flux:api:fixed_window:<digest> 250000 2 1000000 1
--   -> {0, 2, 0, 750000, 750000, 0}

local requests, period = tonumber(ARGV[2]), tonumber(ARGV[3])

for i = 1, #KEYS do
  local key, cost = KEYS[i], cost_of(i)
  local count, window_end = load(key)
  if count == false then
    foreign()
  else
    if not (count and window_end and now < window_end) then
      count, window_end = 0, now + period
    end
    local reset_after = window_end - now
    if count + cost > requests then
      -- sub0: a count stored under a higher limit (lowered in place) may exceed it.
      answer(0, requests, sub0(requests, count), reset_after, reset_after, 0)
    else
      count = count + cost
      save(key, format('%d %d', count, window_end), reset_after)
      answer(1, requests, requests - count, reset_after, 0, 0)
    end
  end
end
return out
