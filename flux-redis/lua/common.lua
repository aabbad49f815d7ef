-- common.lua: the prelude of every Flux script. flux-redis/src/scripts.rs
-- builds each script as common.lua, then bucket.lua for the bucket policies,
-- then the policy's own file.
--
-- A script decides one call per key in KEYS, in order, all under one quota,
-- and answers six integers per key: {allowed (1|0), limit, remaining,
-- reset_after_us, retry_after_us, delay_us}, or allowed = -1 when the key
-- holds a value of another type (a key Flux did not write: it is left
-- alone). One key is one decision, so a single decision touches a single key
-- (Redis Cluster); a batch on one Redis is one script call per quota.
--
-- ARGV[1] is now, integer microseconds since the Unix epoch, or empty to use
-- Redis TIME (every app server then agrees on the time). Then the quota's
-- constants (laid out by bucket.lua or the policy's file), then one cost per
-- key: ARGV[#ARGV - #KEYS + i] is the cost of KEYS[i].
--
-- Each key is stored as a string of integers separated by spaces, written
-- with string.format('%d'), never tostring (Lua 5.1 keeps 14 significant
-- digits: a microsecond epoch has 16), with a PX TTL of when the state decides
-- like no state at all. A refused call writes nothing.
--
-- Numbers: Lua's numbers are doubles. flux-core's Quota keeps every quantity
-- below 2^53, so + - * on them are exact, but a / b is rounded. For a, b below
-- 2^53 math.floor(a / b) still lands on the right integer (the rounding error
-- is under half an ulp of the quotient, less than 1/b); idiv checks the
-- quotient anyway, so exactness does not rest on that argument alone.

local floor, format, find, sub = math.floor, string.format, string.find, string.sub

-- floor(a / b) for integers a >= 0, b > 0.
local function idiv(a, b)
  local q = floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function ceil_div(a, b)
  local q = idiv(a, b)
  if q * b < a then
    q = q + 1
  end
  return q
end

-- a - b, or 0 when b is larger (Rust's saturating_sub).
local function sub0(a, b)
  if a > b then
    return a - b
  end
  return 0
end

local now = tonumber(ARGV[1])
local injected = now ~= nil
if not injected then
  if redis.replicate_commands then
    -- Before Redis 5 a script that reads TIME may write only when its
    -- effects, not the script, are replicated. A no-op since.
    redis.replicate_commands()
  end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The cost of the i-th call. Most calls cost 1, which needs no parsing.
local first_cost = #ARGV - #KEYS
local function cost_of(i)
  local cost = ARGV[first_cost + i]
  if cost == '1' then
    return 1
  end
  return tonumber(cost)
end

local out, answered = {}, 0
local function answer(allowed, limit, remaining, reset_after, retry_after, delay)
  out[answered + 1] = allowed
  out[answered + 2] = limit
  out[answered + 3] = remaining
  out[answered + 4] = reset_after
  out[answered + 5] = retry_after
  out[answered + 6] = delay
  answered = answered + 6
end

local function foreign()
  answer(-1, 0, 0, 0, 0, 0)
end

-- The key's stored integers; nothing when it is absent (or not Flux's
-- format); false when it holds another type.
local function load(key)
  local stored = redis.pcall('GET', key)
  if type(stored) == 'table' then
    return false
  end
  if not stored then
    return nil
  end
  local first = find(stored, ' ', 1, true)
  if not first then
    return nil
  end
  local second = find(stored, ' ', first + 1, true)
  if second then
    return tonumber(sub(stored, 1, first - 1)), tonumber(sub(stored, first + 1, second - 1)),
      tonumber(sub(stored, second + 1))
  end
  return tonumber(sub(stored, 1, first - 1)), tonumber(sub(stored, first + 1))
end

-- Stores `fields` for `expires_in` microseconds: past that the state decides
-- like no state, so it may go. Redis expires keys by its own clock, which an
-- injected time does not move, so under an injected time (tests) a key is kept
-- at least a minute; a stale key decides like none.
local function save(key, fields, expires_in)
  local ttl = ceil_div(expires_in, 1000)
  if ttl < 1 then
    ttl = 1
  end
  if injected and ttl < 60000 then
    ttl = 60000
  end
  -- A number reaches Redis as %.14g: exact here, since ttl < 2^53 / 1000 has
  -- at most 13 digits (and cheaper than a format).
  redis.call('SET', key, fields, 'PX', ttl)
end
