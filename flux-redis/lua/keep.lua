-- keep.lua: after the policy's file, for an admitted call: how long to keep
-- the state it leaves, `keep_us` (at least 1) in whole milliseconds rounded
-- up, the PX of its SET. Past that the state decides like no state, so it
-- may go. Redis expires keys by its own clock, which an injected time does
-- not move, so under an injected time (tests) a key is kept at least a
-- minute; a stale key decides like none. refund.lua's `put` does the same.

    local ttl
    if ok then
      ttl = keep_us / 1000
      ttl = ttl + (-ttl) % 1
      if injected and ttl < 60000 then
        ttl = 60000
      end
    end
