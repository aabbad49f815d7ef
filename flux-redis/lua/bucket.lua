-- bucket.lua: gcra, token_bucket and leaky_bucket deciding quota q of a call
-- (flux-core policy.rs, `bucket`), inline between head.lua and tail.lua. It
-- reads `value` (the key's, nil when absent), `judged` (the cost) and q, and
-- sets ok, rem, reset, retry and dl, and when admitted new_value and keep_us
-- (what to store, and for how long: keep.lua makes that a TTL).
--
-- Q holds four numbers per quota:
--   unit:     scaled units one call of cost 1 weighs (period_us / gcd)
--   rate:     scaled units drained per microsecond (requests / gcd)
--   capacity: burst * unit
--   room:     capacity plus what drains within max_wait (capacity when
--             max_wait is 0): the highest level an admitted call may leave
-- A call of cost c adds c * unit; it is admitted when the level after it is
-- at most room, and waits (leaky_bucket's max_wait) until it drains down to
-- capacity. Since the numbers are integers, ceil((after - capacity) / rate)
-- > max_wait exactly when after > room.
--
-- Stored, by policy:
--   gcra          "tat" or "tat frac": the theoretical arrival time
--                 tat + frac / rate (µs), when the level is back to 0 (frac
--                 is left out when 0, as it always is when rate is 1)
--   token_bucket  "tokens last": capacity - level in scaled units at `last`
--   leaky_bucket  "level last": the level in scaled units at `last`
-- Refill is continuous and no fraction is rounded away.

    local unit, rate, capacity, room = K1, K2, K3, K4
    if q > 1 then
      local i = (q - 1) * 4
      unit, rate, capacity, room = Q[i + 1], Q[i + 2], Q[i + 3], Q[i + 4]
    end
    local level, last = 0, nil
    if value then
      -- Two numbers "a b", or for gcra often one.
      local a, b
      if POLICY == 'gcra' then
        a, b = tonumber(value), 0
      end
      if not a then
        local space = string.find(value, ' ', 1, true)
        if space then
          a, b = tonumber(string.sub(value, 1, space - 1)), tonumber(string.sub(value, space + 1))
        end
      end
      if not (a and b) then
        -- Not a state Flux wrote: none.
      elseif POLICY == 'gcra' then
        if a >= now then
          level = (a - now) * rate + b
        end
      else
        last = b
        local held = a
        if POLICY == 'token_bucket' then
          if held > capacity then
            held = capacity
          end
          held = capacity - held
        end
        if now > last then
          held = held - (now - last) * rate
        end
        if held > 0 then
          level = held
        end
      end
    end
    local after = level + judged * unit
    if after > room then
      if room > level then
        rem = (room - level) / unit
        rem = rem - rem % 1
      end
      reset, retry = level, after - room
      if rate ~= 1 then
        reset, retry = reset / rate, retry / rate
        reset, retry = reset + (-reset) % 1, retry + (-retry) % 1
      end
    else
      ok = true
      rem = (room - after) / unit
      rem = rem - rem % 1
      local whole, frac = after, 0
      if rate ~= 1 then
        whole = after / rate
        whole = whole - whole % 1
        frac = after - whole * rate
      end
      reset = whole
      if frac > 0 then
        reset = whole + 1
      end
      if after > capacity then
        dl = after - capacity
        if rate ~= 1 then
          dl = dl / rate
          dl = dl + (-dl) % 1
        end
      end
      if POLICY == 'gcra' then
        new_value, keep_us = now + whole, reset
        if frac > 0 then
          new_value = string.format('%d %d', now + whole, frac)
        end
      else
        -- Stamped no earlier than the stored `last`: a clock that steps
        -- back must not drain the same microseconds twice (policy.rs,
        -- `store_level`).
        local stamp = now
        if last and last > now then
          stamp = last
        end
        local held = after
        if POLICY == 'token_bucket' then
          held = capacity - after
          if held < 0 then
            held = 0
          end
        end
        new_value, keep_us = string.format('%d %d', held, stamp), stamp - now + reset
      end
    end
