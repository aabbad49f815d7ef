-- What a gcra limit of two quotas would cost Redis at the least if one key
-- held both quotas' states ("tat1 tat2"): one GET and one SET, as a limit
-- of one quota. Not how Flux stores them (a key per quota); measured beside
-- gcra_two.lua to show what the layout costs. KEYS[1] the caller's key;
-- ARGV as gcra_two.lua.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local e1, burst1 = tonumber(ARGV[1]), tonumber(ARGV[2])
local e2, burst2 = tonumber(ARGV[3]), tonumber(ARGV[4])
local tat1, tat2 = now, now
local value = redis.call('GET', KEYS[1])
if value then
  local space = string.find(value, ' ', 1, true)
  tat1, tat2 = tonumber(string.sub(value, 1, space - 1)), tonumber(string.sub(value, space + 1))
end
if tat1 < now then tat1 = now end
if tat2 < now then tat2 = now end
local new1, new2 = tat1 + e1, tat2 + e2
if new1 - now > burst1 * e1 then return {0, new1 - now - burst1 * e1} end
if new2 - now > burst2 * e2 then return {0, new2 - now - burst2 * e2} end
local keep = math.max(new1, new2) - now
redis.call('SET', KEYS[1], string.format('%d %d', new1, new2), 'PX', math.ceil(keep / 1000))
return {1, 0}
