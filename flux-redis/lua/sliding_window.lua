-- sliding_window.lua: requests per any window of period, estimated from the
-- previous and current window's counts (flux-core policy.rs), deciding
-- quota q of a call inline between head.lua and tail.lua (bucket.lua says
-- what it reads and sets).
--
-- Q holds two numbers per quota: requests, period_us.
-- Stored: "prev curr start": the previous and current window's counts and
-- when the current window started (µs). A call fits when
--   prev * (period - elapsed) + (curr + cost) * period <= requests * period
-- (the estimate times period, so it stays integral).

    local n, period = K1, K2
    if q > 1 then
      n, period = Q[2 * q - 1], Q[2 * q]
    end
    -- The counts at now: the stored ones moved on by the windows that ended
    -- since (policy.rs, `windows_at`; refund.lua does the same).
    local prev, curr, start
    if value then
      local first = string.find(value, ' ', 1, true)
      local second = first and string.find(value, ' ', first + 1, true)
      if second then
        prev, curr, start = tonumber(string.sub(value, 1, first - 1)),
          tonumber(string.sub(value, first + 1, second - 1)), tonumber(string.sub(value, second + 1))
      end
    end
    if not (prev and curr and start) then
      prev, curr, start = 0, 0, now
    end
    if now >= start + period then
      local windows = (now - start) / period
      windows = windows - windows % 1
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
    local elapsed = now - start
    if elapsed < 0 then
      -- A clock that stepped back.
      elapsed = 0
    end
    local left = period - elapsed
    local budget = n * period
    local weighted_prev = prev * left
    if weighted_prev + (curr + judged) * period > budget then
      if curr + judged <= n then
        -- Within this window, as the previous window's weight slides out.
        retry = (weighted_prev - (n - curr - judged) * period) / prev
        retry = retry + (-retry) % 1
      else
        -- Only after this window ends, as the current count slides out.
        retry = (curr + judged - n) * period / curr
        retry = left + retry + (-retry) % 1
      end
      if curr > 0 then
        reset = left + period
      elseif prev > 0 then
        reset = left
      end
    else
      ok = true
      curr = curr + judged
      -- curr > 0 now: the state matters until this window and the next are over.
      reset = left + period
      new_value, keep_us = string.format('%d %d %d', prev, curr, start), reset
    end
    if budget > weighted_prev + curr * period then
      rem = (budget - weighted_prev - curr * period) / period
      rem = rem - rem % 1
    end
