-- sliding_window.lua: requests per any window of period, estimated from the
-- previous and current window's counts (flux-core policy.rs).
--
-- KEYS: one storage key per call, {prefix}{scope}:sliding_window:{digest}
-- ARGV: now_us or '' (Redis TIME), requests, period_us, then one cost per key
-- Stored: "prev curr start": the previous and current window's counts and
--         when the current window started (µs). A call fits when
--           prev * (period - elapsed) + (curr + cost) * period <= requests * period
--         (the estimate times period, so it stays integral).
-- Reply: six integers per key (common.lua)
--
-- Example: 2 per second, a third call 0.25 s after two at t=0:
--   EVALSHA <sha> 1 flux:api:sliding_window:<digest> 250000 2 1000000 1
--   -> {0, 2, 0, 1750000, 1250000, 0}

local n, period = tonumber(ARGV[2]), tonumber(ARGV[3])

local function sliding(key, cost, prev, curr, start)
  if not (prev and curr and start) then
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
    -- Nothing left to weigh: the same as a key never seen, whether or not
    -- Redis has expired it yet.
    start = now
  end
  local left = period - sub0(now, start)
  local budget = n * period
  local weighted_prev = prev * left

  if weighted_prev + (curr + cost) * period > budget then
    local retry_after
    if curr + cost <= n then
      -- Within this window, as the previous window's weight slides out.
      retry_after = ceil_div(weighted_prev - (n - curr - cost) * period, prev)
    else
      -- Only after this window ends, as the current count slides out.
      retry_after = left + ceil_div((curr + cost - n) * period, curr)
    end
    local reset_after = 0
    if curr > 0 then
      reset_after = left + period
    elseif prev > 0 then
      reset_after = left
    end
    local remaining = idiv(sub0(budget, weighted_prev + curr * period), period)
    answer(0, n, remaining, reset_after, retry_after, 0)
    return
  end
  curr = curr + cost
  -- curr > 0 now: the state matters until this window and the next are over.
  local reset_after = left + period
  save(key, format('%d %d %d', prev, curr, start), reset_after)
  answer(1, n, idiv(sub0(budget, weighted_prev + curr * period), period), reset_after, 0, 0)
end

for i = 1, #KEYS do
  local key = KEYS[i]
  local prev, curr, start = load(key)
  if prev == false then
    foreign()
  else
    sliding(key, cost_of(i), prev, curr, start)
  end
end
return out
