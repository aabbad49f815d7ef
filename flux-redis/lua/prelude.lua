-- prelude.lua: the start of every Flux script. flux-redis/src/scripts.rs
-- builds one script per limit and operation from a header it writes, this
-- file, refund.lua (refund scripts only), head.lua (one_head.lua for a
-- limit of one quota), the policy's file, keep.lua and tail.lua
-- (one_tail.lua). The header holds the limit's constants, so a call
-- carries only its keys, the time and its costs (Redis copies and the
-- script parses every argument of every call):
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
-- converts with %.17g (exact below 2^53); a value not in that form reads as
-- no state. Every write carries a PX TTL of when the state decides like no
-- state at all (keep.lua); a refusal writes nothing; a state refunded to
-- nothing is deleted.
--
-- Nothing here is a function: in Redis's Lua every call of a script runs its
-- main chunk anew, so each `local function` is a closure made (and later
-- collected) per call, and each call of one costs as much as a line of
-- arithmetic many times over. The decision of one quota is written inline
-- in the policy's file, its state parsed and its TTL computed where they
-- are needed; only refunds, which are rare, use functions (refund.lua).
-- `make bench` (flux-redis/benches/scripts.rs) holds each policy's script
-- to a hand-written minimal script doing the same reads and writes.
--
-- Numbers: Lua's numbers are doubles. flux-core's Quota keeps every quantity
-- below 2^53, so + - * on them are exact, but a / b is rounded. Integer
-- division is written as x = a / b; x - x % 1 (floor) or x + (-x) % 1
-- (ceil), without the call of math.floor: `%` is x - floor(x), exact in
-- doubles. For integers a >= 0, b > 0 with a + b < 2^53 (Quota's bound,
-- `largest_quantity`, leaves that room) the rounded quotient has the right
-- floor: a / b is at least 1 / b below the next integer q + 1, and the
-- rounding error is at most (q + 1) * 2^-53 < 1 / b since b * (q + 1) <= a + b.
--
-- Time: requires Redis 5 or later, where a script that reads TIME may write
-- (its effects, not the script, are replicated).

local now, injected = ARGV[1], false
if now == '' then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
else
  now, injected = tonumber(now), true
end
