-- refund.lua: in refund scripts only, before head.lua. Gives back up to
-- `cost` of what quota q's key holds, never below empty (flux-core
-- policy.rs, `refund`): a bucket's level stops at 0; a window's count at 0;
-- a fixed window keeps its end; a sliding window gives back from the current
-- window first. Writes the result (deletes a state refunded to nothing) and
-- returns the key's value now, for the policy's file to report what the next
-- call would be told. Its reading and writing of each policy's state is
-- the one in bucket.lua and the window files, as functions: refunds are
-- rare enough not to need inlining.

local format, floor = string.format, math.floor

-- floor(a / b) for integers a and b > 0, exact as prelude.lua says; ceil(a / b)
-- is -idiv(-a, b).
local function idiv(a, b)
  return floor(a / b)
end

-- The numbers of a stored state ("a b c", "a b" or "a"); nothing when the
-- key is absent or not in Flux's format.
local function numbers(value)
  if not value then
    return nil
  end
  local a = tonumber(value)
  if a then
    return a
  end
  local first = string.find(value, ' ', 1, true)
  if not first then
    return nil
  end
  local second = string.find(value, ' ', first + 1, true)
  local sub = string.sub
  if second then
    return tonumber(sub(value, 1, first - 1)), tonumber(sub(value, first + 1, second - 1)),
      tonumber(sub(value, second + 1))
  end
  return tonumber(sub(value, 1, first - 1)), tonumber(sub(value, first + 1))
end

-- Stores `value` for `keep_us` microseconds, as keep.lua says.
local function put(key, value, keep_us)
  local ttl = -idiv(-keep_us, 1000)
  if injected and ttl < 60000 then
    ttl = 60000
  end
  redis.call('SET', key, value, 'PX', ttl)
end

local function refund(key, value, q, cost)
  local a, b, c = numbers(value)
  local new_value, expires_at
  if POLICY == 'fixed_window' then
    if not (a and b and now < b and a > 0) then
      return value
    end
    if cost > a then
      cost = a
    end
    new_value, expires_at = format('%d %d', a - cost, b), b
  elseif POLICY == 'sliding_window' then
    local period = Q[2 * q]
    local prev, curr, start = a, b, c
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
      return value
    end
    local from_curr = cost
    if from_curr > curr then
      from_curr = curr
    end
    local from_prev = cost - from_curr
    if from_prev > prev then
      from_prev = prev
    end
    prev, curr = prev - from_prev, curr - from_curr
    expires_at = now
    if curr > 0 then
      expires_at = start + 2 * period
    elseif prev > 0 then
      expires_at = start + period
    end
    new_value = format('%d %d %d', prev, curr, start)
  else
    local unit, rate, capacity = Q[4 * q - 3], Q[4 * q - 2], Q[4 * q - 1]
    local level, last = 0, nil
    if POLICY == 'gcra' then
      if a and a >= now then
        level = (a - now) * rate + (b or 0)
      end
    elseif a and b then
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
    if level == 0 then
      return value
    end
    local given = cost * unit
    if given > level then
      given = level
    end
    level = level - given
    local whole = idiv(level, rate)
    local drains_in = whole
    if whole * rate < level then
      drains_in = whole + 1
    end
    if POLICY == 'gcra' then
      new_value = format('%d %d', now + whole, level - whole * rate)
      expires_at = now + drains_in
    else
      local stamp = now
      if last and last > now then
        stamp = last
      end
      local held = level
      if POLICY == 'token_bucket' then
        held = capacity - level
      end
      new_value, expires_at = format('%d %d', held, stamp), stamp + drains_in
    end
  end
  if expires_at <= now then
    redis.call('DEL', key)
    return nil
  end
  put(key, new_value, expires_at - now)
  return new_value
end
