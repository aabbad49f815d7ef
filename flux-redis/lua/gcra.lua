-- gcra.lua: the Generic Cell Rate Algorithm (flux-core policy.rs).
--
-- KEYS: one storage key per call, {prefix}{scope}:gcra:{digest}
-- ARGV: now_us or '' (Redis TIME), burst, unit, rate, max_wait_us (0) as in
--       bucket.lua, then one cost per key
-- Stored: "tat frac", the theoretical arrival time tat + frac / rate (µs):
--         when the level is back to 0
-- Reply: six integers per key (common.lua)
--
-- Example: 2 per second, burst 2 (unit 500000, rate 1), a third call at t=0:
--   EVALSHA <sha> 1 flux:api:gcra:<digest> 0 2 500000 1 0 1
--   -> {0, 2, 0, 1000000, 500000, 0}

for i = 1, #KEYS do
  local key = KEYS[i]
  local tat, frac = load(key)
  if tat == false then
    foreign()
  else
    local level = 0
    if tat and frac and tat >= now then
      level = (tat - now) * rate + frac
    end
    local after, reset_after = bucket(level, cost_of(i))
    if after then
      local whole = idiv(after, rate)
      save(key, format('%d %d', now + whole, after - whole * rate), reset_after)
    end
  end
end
return out
