-- The floor for token_bucket and leaky_bucket: the least a bucket script
-- that stores what DESIGN.md §2 says (two numbers, the level and when it
-- was true) does. Reads TIME, GETs "level last", drains, SETs the new pair
-- written with string.format('%d %d') and a PX TTL, returns two numbers.
-- KEYS[1] the key; ARGV: the emission interval (µs) and the burst.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local e, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local level = 0
local v = redis.call('GET', KEYS[1])
if v then
  local space = string.find(v, ' ', 1, true)
  local stored, last = tonumber(string.sub(v, 1, space - 1)), tonumber(string.sub(v, space + 1))
  level = stored - (now - last)
  if level < 0 then level = 0 end
end
if level + e > burst * e then return {0, level + e - burst * e} end
level = level + e
redis.call('SET', KEYS[1], string.format('%d %d', level, now), 'PX', math.ceil(level / 1000))
return {1, 0}
