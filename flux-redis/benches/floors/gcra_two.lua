-- The floor for a gcra limit of two quotas: the least such a script does.
-- Reads TIME, GETs each quota's theoretical arrival time, and when both
-- admit SETs both with their PX TTLs; returns two numbers. KEYS[1], KEYS[2]
-- the caller's key under each quota; ARGV: each quota's emission interval
-- (µs) and burst.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local e1, burst1 = tonumber(ARGV[1]), tonumber(ARGV[2])
local e2, burst2 = tonumber(ARGV[3]), tonumber(ARGV[4])
local tat1 = tonumber(redis.call('GET', KEYS[1])) or now
local tat2 = tonumber(redis.call('GET', KEYS[2])) or now
if tat1 < now then tat1 = now end
if tat2 < now then tat2 = now end
local new1, new2 = tat1 + e1, tat2 + e2
if new1 - now > burst1 * e1 then return {0, new1 - now - burst1 * e1} end
if new2 - now > burst2 * e2 then return {0, new2 - now - burst2 * e2} end
redis.call('SET', KEYS[1], new1, 'PX', math.ceil((new1 - now) / 1000))
redis.call('SET', KEYS[2], new2, 'PX', math.ceil((new2 - now) / 1000))
return {1, 0}
