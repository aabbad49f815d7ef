-- common.lua: the prelude of every Flux script (flux-redis/src/scripts.rs
-- prepends it, then bucket.lua for the bucket policies, then the policy's own
-- file). It reads the arguments, the clock and the key's stored value.
--
-- KEYS[1]  the storage key: {prefix}{scope}:{policy}:{digest}
-- ARGV[1]  now, integer microseconds since the Unix epoch; empty: Redis TIME
-- ARGV[2]  cost, integer >= 1 (checked by the caller against the quota)
-- ARGV[3]  requests: calls per period
-- ARGV[4]  period_us: the period, integer microseconds
-- ARGV[5]  burst: the most calls of cost 1 a bucket holds
-- ARGV[6]  unit: scaled units one call of cost 1 weighs (period_us / gcd)
-- ARGV[7]  rate: scaled units drained per microsecond (requests / gcd)
-- ARGV[8]  max_wait_us: how long a leaky_bucket call may be delayed
--
-- Reply (every script): an array of six integers
--   {allowed (1|0), limit, remaining, reset_after_us, retry_after_us, delay_us}
--
-- Numbers: Lua's numbers are doubles. flux-core's Quota keeps every quantity
-- below 2^53, so + - * on them are exact, but a / b is rounded. For a, b below
-- 2^53 math.floor(a / b) still lands on the right integer (the rounding error
-- is under half an ulp of the quotient, less than 1/b); idiv checks the
-- quotient anyway, so exactness does not rest on that argument alone. Numbers go to Redis as strings from string.format('%d'), never
-- tostring (Lua 5.1 keeps 14 significant digits; a microsecond epoch has 16).

local function idiv(a, b)
  -- floor(a / b) for integers a >= 0, b > 0.
  local q = math.floor(a / b)
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

local function int(x)
  return string.format('%d', x)
end

local key = KEYS[1]
local now = tonumber(ARGV[1])
local injected = now ~= nil
if not injected then
  if redis.replicate_commands then
    -- Redis < 5 replicates scripts verbatim unless told otherwise; TIME is
    -- only allowed before a write when the effects are replicated.
    redis.replicate_commands()
  end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost = tonumber(ARGV[2])
local requests = tonumber(ARGV[3])
local period = tonumber(ARGV[4])

-- The stored fields, as numbers; nothing when the key is absent or unreadable.
local function load()
  local stored = redis.call('GET', key)
  if not stored then
    return nil
  end
  local a, b, c = string.match(stored, '^(%d+) (%d+) ?(%d*)$')
  return tonumber(a), tonumber(b), tonumber(c)
end

-- Stores the fields for `expires_in` microseconds: a key past that decides
-- like no key at all, so it may go. Redis expires keys by its own clock, which
-- an injected time does not move, so under an injected time a key is kept at
-- least a minute: long enough for a test, and a stale key decides like none.
local function save(fields, expires_in)
  local ttl = ceil_div(expires_in, 1000)
  if ttl < 1 then
    ttl = 1
  end
  if injected and ttl < 60000 then
    ttl = 60000
  end
  redis.call('SET', key, fields, 'PX', int(ttl))
end
