-- token_bucket.lua: up to burst tokens, refilled continuously (flux-core policy.rs).
--
-- KEYS: one storage key per call, {prefix}{scope}:token_bucket:{digest}
-- ARGV: now_us or '' (Redis TIME), burst, unit, rate, max_wait_us (0) as in
--       bucket.lua, then one cost per key
-- Stored: "tokens last", the tokens in scaled units (capacity - level) at
--         `last` µs. Refill is continuous and no fraction is rounded away, so
--         traffic faster than one token per interval still refills.
-- Reply: six integers per key (common.lua)
--
-- Example: 10 per second, burst 10 (unit 100000, rate 1), a first call at t=5:
--   EVALSHA <sha> 1 flux:api:token_bucket:<digest> 5 10 100000 1 0 1
--   -> {1, 10, 9, 100000, 0, 0}

for i = 1, #KEYS do
  local key = KEYS[i]
  local tokens, last = load(key)
  if tokens == false then
    foreign()
  else
    local level = 0
    if tokens and last then
      level = drain(capacity - math.min(tokens, capacity), last)
    end
    local after, reset_after = bucket(level, cost_of(i))
    if after then
      -- Stamped no earlier than the stored `last`: a clock that steps back
      -- must not drain the same microseconds twice (policy.rs, `stamp`).
      local stamp = now
      if last and last > now then
        stamp = last
      end
      save(key, format('%d %d', sub0(capacity, after), stamp), reset_after + stamp - now)
    end
  end
end
return out
