-- The floor for sliding_window: the least a script that keeps DESIGN.md
-- §2's state (two counters and when the current window started) does.
-- Reads TIME, GETs "prev curr start", moves the windows on, weighs the
-- previous one, SETs the new triple written with string.format and a PX
-- TTL, returns two numbers. KEYS[1] the key; ARGV: requests, period (µs).
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local n, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local prev, curr, start = 0, 0, now
local v = redis.call('GET', KEYS[1])
if v then
  local a = string.find(v, ' ', 1, true)
  local b = string.find(v, ' ', a + 1, true)
  prev, curr, start = tonumber(string.sub(v, 1, a - 1)), tonumber(string.sub(v, a + 1, b - 1)), tonumber(string.sub(v, b + 1))
  local w = math.floor((now - start) / period)
  if w >= 1 then
    if w == 1 then prev = curr else prev = 0 end
    curr, start = 0, start + w * period
  end
end
if prev * (period - (now - start)) + (curr + 1) * period > n * period then return {0, 1} end
redis.call('SET', KEYS[1], string.format('%d %d %d', prev, curr + 1, start), 'PX', math.ceil((start + 2 * period - now) / 1000))
return {1, 0}
