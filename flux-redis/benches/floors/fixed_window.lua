-- The floor for fixed_window: the least a script that keeps DESIGN.md §2's
-- state (the count and when the window ends) does. Reads TIME, GETs
-- "count end", SETs the new pair written with string.format('%d %d') and a
-- PX TTL, returns two numbers. KEYS[1] the key; ARGV: requests, period (µs).
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local n, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local count, ends = 0, now + period
local v = redis.call('GET', KEYS[1])
if v then
  local space = string.find(v, ' ', 1, true)
  local c, e = tonumber(string.sub(v, 1, space - 1)), tonumber(string.sub(v, space + 1))
  if now < e then count, ends = c, e end
end
if count >= n then return {0, ends - now} end
redis.call('SET', KEYS[1], string.format('%d %d', count + 1, ends), 'PX', math.ceil((ends - now) / 1000))
return {1, 0}
