-- The floor for gcra: the least a GCRA script does. Reads TIME, GETs the
-- key's theoretical arrival time (one number), SETs the next one with a
-- PX TTL and returns two numbers. KEYS[1] the key; ARGV: the emission
-- interval (µs) and the burst.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local e, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new = tat + e
if new - now > burst * e then return {0, new - now - burst * e} end
redis.call('SET', KEYS[1], new, 'PX', math.ceil((new - now) / 1000))
return {1, 0}
