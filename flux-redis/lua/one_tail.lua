-- one_tail.lua: after the policy's file and keep.lua have decided the
-- call's one quota.

    status = 0
    if ok then
      status = 1
      if OP == 'd' then
        redis.call('SET', key, new_value, 'PX', ttl)
      end
    end
  end
  if calls == 1 then
    return {status, 0, rem, reset, retry, dl}
  end
  out = out or {}
  local at = 6 * (call - 1)
  out[at + 1], out[at + 2], out[at + 3] = status, 0, rem
  out[at + 4], out[at + 5], out[at + 6] = reset, retry, dl
end
return out
