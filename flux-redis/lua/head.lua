-- head.lua: the loop over a script's calls and each call's quotas, up to
-- the policy's file, which decides one quota inline (see its comment for
-- what it reads and sets); tail.lua closes both loops.
--
-- A call is admitted only when every quota admits it; only then is every
-- quota charged (flux-core policy.rs, `apply`). The decision reported is the
-- one closest to refusing: a refusal over an admission, then the longer
-- retry_after, then the fewer remaining, the earlier quota on a tie; an
-- admitted call waits for the longest delay of all.

local calls = #KEYS / NQ
local first_cost = #ARGV - calls
local out
-- The writes that wait until every quota of a call admits it: key, value
-- and TTL per quota, in one table for the whole script (a table made per
-- call cost a call of two quotas 7 % more Redis time); `np` counts the
-- call's.
local pending = {}

for call = 1, calls do
  local cost = ARGV[first_cost + call]
  if cost == '1' then
    cost = 1
  else
    cost = tonumber(cost)
  end
  -- The decision reported so far: status, quota, remaining, reset, retry, delay.
  local r_ok, r_q, r_rem, r_reset, r_retry, r_delay
  local all_ok, longest, foreign = true, 0, nil
  local np = 0
  for q = 1, NQ do
    local key = KEYS[(call - 1) * NQ + q]
    local value = redis.pcall('GET', key)
    -- A key of another type answers GET with an error table (one_head.lua).
    if value and value.err then
      foreign = q - 1
      break
    end
    local judged = cost
    if OP == 'r' then
      value = refund(key, value, q, cost)
      -- Then report what the next call of cost 1 would be told.
      judged = 1
    end
    -- What the policy's file sets.
    local ok, rem, reset, retry, dl, new_value, keep_us = false, 0, 0, 0, 0, nil, nil
