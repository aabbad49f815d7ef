-- prelude.lua: the start of every Flux script. flux-redis/src/scripts.rs
-- builds one script per limit and operation from a header it writes, this
-- file, refund.lua (refund scripts only), head.lua, the policy's file and
-- tail.lua. The header holds the limit's constants, so a call carries only
-- its keys, the time and its costs (Redis copies and the script parses
-- every argument of every call):
--
--   local POLICY, OP, NQ = 'gcra', 'd', 2
--     -- the policy; 'd' decide and charge, 'p' peek, 'r' refund; the
--     -- number of quotas in the limit
--   local Q = {...}
--     -- every quota's constants, in order (the policy's file says which)
--   local K1, K2, K3, K4 = ...
--     -- the first quota's, so a limit of one reads them without a table
--
-- KEYS: NQ keys per call (the caller's key for each quota, in the order of
--       Q), for one or more calls; a call's keys share a hash tag, so they
--       live on one Redis Cluster node.
-- ARGV: [1] now, integer microseconds since the Unix epoch, or '' for Redis
--       TIME (every app server then agrees on the time); [2..] one cost per
--       call.
-- Reply: six integers per call: {status, quota, remaining, reset_after_us,
--       retry_after_us, delay_us}. status is 1 admitted, 0 refused, -1 when
--       the key of quota `quota` holds a value of another type (a key Flux
--       did not write: it is left alone); otherwise quota is the 0-based
--       index of the quota the decision reports.
--
-- Example (gcra, 2 per second, burst 2, decide; a third call at t=0):
--   EVALSHA <sha> 1 flux:api:gcra:{<digest>} 0 1
--   -> {0, 0, 0, 1000000, 500000, 0}
--
-- State is stored as integers separated by spaces, written with
-- string.format('%d'), never tostring (Lua 5.1 keeps 14 significant digits:
-- a microsecond epoch has 16), or as one number argument, which Redis
-- converts with %.17g (exact below 2^53). Every write carries a PX TTL of
-- when the state decides like no state at all; a refusal writes nothing; a
-- state refunded to nothing is deleted.
--
-- The decision of one quota is written inline in the policy's file rather
-- than as functions: in Redis's Lua a function call costs as much as a
-- line of arithmetic many times over, and most calls are one quota deciding.
--
-- Numbers: Lua's numbers are doubles. flux-core's Quota keeps every quantity
-- below 2^53, so + - * on them are exact, but a / b is rounded. For a, b below
-- 2^53 math.floor(a / b) still lands on the right integer (the rounding error
-- is under half an ulp of the quotient, less than 1/b); idiv checks the
-- quotient anyway, so exactness does not rest on that argument alone.
--
-- Time: requires Redis 5 or later, where a script that reads TIME may write
-- (its effects, not the script, are replicated).

local tonumber, floor, format, find, sub = tonumber, math.floor, string.format, string.find, string.sub

-- floor(a / b) for integers a and b > 0; ceil(a / b) is -idiv(-a, b).
local function idiv(a, b)
  local q = floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local now = tonumber(ARGV[1])
local injected = now ~= nil
if not injected then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end

-- Stores `value` for `keep_us` microseconds (at least 1): past that the
-- state decides like no state, so it may go. Redis expires keys by its own
-- clock, which an injected time does not move, so under an injected time
-- (tests) a key is kept at least a minute; a stale key decides like none.
local function put(key, value, keep_us)
  local ttl = -idiv(-keep_us, 1000)
  if injected and ttl < 60000 then
    ttl = 60000
  end
  redis.call('SET', key, value, 'PX', ttl)
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
  local first = find(value, ' ', 1, true)
  if not first then
    return nil
  end
  local second = find(value, ' ', first + 1, true)
  if second then
    return tonumber(sub(value, 1, first - 1)), tonumber(sub(value, first + 1, second - 1)),
      tonumber(sub(value, second + 1))
  end
  return tonumber(sub(value, 1, first - 1)), tonumber(sub(value, first + 1))
end
