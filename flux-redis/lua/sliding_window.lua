-- sliding_window.lua: requests per any window of period, estimated from the
-- previous and current window's counts (flux-core policy.rs).
--
-- KEYS[1] the storage key; ARGV as in common.lua (uses now, cost, requests,
-- period_us).
-- Stored: "prev curr start": the previous and current window's counts and
-- when the current window started (µs). A call fits when
--   prev * (period - elapsed) + (curr + cost) * period <= requests * period
-- (the estimate times period, so it stays integral).
-- Reply: {allowed, limit, remaining, reset_after_us, retry_after_us, delay_us}
--
-- Example: 2 per second, third call 0.25 s after two at t=0:
--   EVALSHA <sha> 1 flux:api:sliding_window:<digest> 250000 1 2 1000000 2 500000 1 0
--   -> {0, 2, 0, 1750000, 1250000, 0}

local prev, curr, start = load()
if not start then
  prev, curr, start = 0, 0, now
end
if now >= start + period then
  local windows = idiv(now - start, period)
  if windows == 1 then
    prev = curr
  else
    prev = 0
  end
  curr = 0
  start = start + windows * period
end
if prev == 0 and curr == 0 then
  -- Nothing left to weigh: the same as a key never seen, whether or not Redis
  -- has expired it yet.
  start = now
end
local left = period - sub0(now, start)
local budget = requests * period
local weighted_prev = prev * left

local function remaining_after(c)
  return idiv(sub0(budget, weighted_prev + c * period), period)
end
local function reset_after(c)
  if c > 0 then
    return left + period
  elseif prev > 0 then
    return left
  end
  return 0
end

if weighted_prev + (curr + cost) * period > budget then
  local retry_after
  if curr + cost <= requests then
    -- Within this window, as the previous window's weight slides out.
    retry_after = ceil_div(weighted_prev - (requests - curr - cost) * period, prev)
  else
    -- Only after this window ends, as the current count slides out.
    retry_after = left + ceil_div((curr + cost - requests) * period, curr)
  end
  return {0, requests, remaining_after(curr), reset_after(curr), retry_after, 0}
end
curr = curr + cost
local reset = reset_after(curr)
save(int(prev) .. ' ' .. int(curr) .. ' ' .. int(start), reset)
return {1, requests, remaining_after(curr), reset, 0, 0}
