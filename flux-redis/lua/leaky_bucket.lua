-- leaky_bucket.lua: a bucket of burst draining at requests / period; with
-- max_wait > 0 it shapes traffic (flux-core policy.rs).
--
-- KEYS: one storage key per call, {prefix}{scope}:leaky_bucket:{digest}
-- ARGV: now_us or '' (Redis TIME), burst, unit, rate, max_wait_us as in
--       bucket.lua, then one cost per key
-- Stored: "level last", the level in scaled units at `last` µs. A call that
--         would overflow but drains within max_wait is admitted with
--         delay_us > 0: the caller waits that long before running it.
-- Reply: six integers per key (common.lua)
--
-- Example: 1 per second, burst 1, max_wait 2 s, a second call at t=0:
--   EVALSHA <sha> 1 flux:api:leaky_bucket:<digest> 0 1 1000000 1 2000000 1
--   -> {1, 1, 1, 2000000, 0, 1000000}   (one more call fits in the queue)

for i = 1, #KEYS do
  local key = KEYS[i]
  local stored, last = load(key)
  if stored == false then
    foreign()
  else
    local level = 0
    if stored and last then
      level = drain(stored, last)
    end
    local after, reset_after = bucket(level, cost_of(i))
    if after then
      -- Stamped no earlier than the stored `last`: a clock that steps back
      -- must not drain the same microseconds twice (policy.rs, `stamp`).
      local stamp = now
      if last and last > now then
        stamp = last
      end
      save(key, format('%d %d', after, stamp), reset_after + stamp - now)
    end
  end
end
return out
