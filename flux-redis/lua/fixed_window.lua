-- fixed_window.lua: requests per window of period that opens at the key's
-- first call (flux-core policy.rs), deciding quota q of a call inline
-- between head.lua and tail.lua (bucket.lua says what it reads and sets).
--
-- Q holds two numbers per quota: requests, period_us.
-- Stored: "count end", the calls counted and when the window ends (µs).

    local n, period = K1, K2
    if q > 1 then
      n, period = Q[2 * q - 1], Q[2 * q]
    end
    local count, window_end
    if value then
      local space = string.find(value, ' ', 1, true)
      if space then
        count, window_end = tonumber(string.sub(value, 1, space - 1)), tonumber(string.sub(value, space + 1))
      end
    end
    if not (count and window_end and now < window_end) then
      count, window_end = 0, now + period
    end
    reset = window_end - now
    if count + judged > n then
      -- A count stored under a higher limit (lowered in place) may exceed it.
      if n > count then
        rem = n - count
      end
      retry = reset
    else
      ok = true
      count = count + judged
      rem = n - count
      new_value, keep_us = string.format('%d %d', count, window_end), reset
    end
