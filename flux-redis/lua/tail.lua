-- tail.lua: after the policy's file and keep.lua have decided quota q of
-- a call.

    if ok and OP == 'd' then
      pending[np + 1], pending[np + 2], pending[np + 3] = key, new_value, ttl
      np = np + 3
    end
    if not ok then
      all_ok = false
    elseif dl > longest then
      longest = dl
    end
    if q == 1 or (r_ok and not ok)
      or (r_ok == ok and (retry > r_retry or (retry == r_retry and rem < r_rem))) then
      r_ok, r_q, r_rem, r_reset, r_retry, r_delay = ok, q - 1, rem, reset, retry, dl
    end
  end

  local status = 0
  if foreign then
    status, r_q, r_rem, r_reset, r_retry, r_delay = -1, foreign, 0, 0, 0, 0
  elseif all_ok then
    status = 1
    for p = 1, np, 3 do
      redis.call('SET', pending[p], pending[p + 1], 'PX', pending[p + 2])
    end
    if OP ~= 'r' then
      r_delay = longest
    end
  end
  if calls == 1 then
    return {status, r_q, r_rem, r_reset, r_retry, r_delay}
  end
  out = out or {}
  local at = 6 * (call - 1)
  out[at + 1], out[at + 2], out[at + 3] = status, r_q, r_rem
  out[at + 4], out[at + 5], out[at + 6] = r_reset, r_retry, r_delay
end
return out
