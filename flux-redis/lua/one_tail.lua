-- one_tail.lua: after the policy's file has decided the call's one quota.

    status = 0
    if ok then
      status = 1
      if OP == 'd' then
        put(key, new_value, keep_us)
      end
    end
  end
  if calls == 1 then
    return {status, 0, rem, reset, retry, dl}
  end
  local at = 6 * (call - 1)
  out[at + 1], out[at + 2], out[at + 3] = status, 0, rem
  out[at + 4], out[at + 5], out[at + 6] = reset, retry, dl
end
return out
