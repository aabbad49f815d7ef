-- one_head.lua: the loop over a script's calls for a limit of one quota
-- (most limits), up to the policy's file; one_tail.lua closes it. Without
-- the bookkeeping of several quotas (head.lua), which costs a call of one
-- quota a tenth more Redis time.

local calls = #KEYS
local out

for call = 1, calls do
  local key, cost = KEYS[call], ARGV[call + 1]
  if cost == '1' then
    cost = 1
  else
    cost = tonumber(cost)
  end
  local value = redis.pcall('GET', key)
  local q, judged, status = 1, cost, -1
  -- What the policy's file sets.
  local ok, rem, reset, retry, dl, new_value, keep_us = false, 0, 0, 0, 0, nil, nil
  -- A key of another type answers GET with an error table; a string's
  -- `err` is nil (indexing a string looks in the string library), and this
  -- spares a call of type() on every decision.
  if not (value and value.err) then
    if OP == 'r' then
      value = refund(key, value, 1, cost)
      -- Then report what the next call of cost 1 would be told.
      judged = 1
    end
