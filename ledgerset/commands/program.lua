-- ledgerset's one server-side program: runs a list of primitive operations all-or-nothing.
--
-- ARGV = nops, then per operation: code, key index, owner key index (0: none), n, then n arguments.
-- Key indexes point into KEYS, so every key the program touches is declared (cluster-safe).
--
-- Redis does not roll back a script that fails half-way, so the program runs in phases:
--   1. checks   every precondition of every operation, against the state the earlier operations
--               of this same program will have made (a save makes its model exist for a later add);
--               the first failure returns {0, reason, op, key, actual type} and nothing is written
--   2. writes   every operation, in order; each leaves one reply
--   3. TTLs     a save's TTL on its model key; then every set key written takes its owner's
--               remaining TTL (or none), so a set never outlives, nor is outlived by, its model
--   4. journal  the stream entries recording what was done, and a replay's checkpoint
-- and returns {1, reply of op 1, reply of op 2, ...}.
--
-- Codes: A add, R remove, P pop, C clear, T retain (keep only the arguments), X toggle,
--        Z replace a set (save), S replace a model hash (save; first argument: the expiry,
--        '' none, 'px:<ms>' relative or 'pxat:<unix ms>' absolute), U update hash fields,
--        D delete a key,
--        J append a journal entry (arguments: MAXLEN, 0 for none; the number of a pop op whose
--          member becomes the entry's args, 0 for none; then field/value pairs),
--        K move a replay checkpoint (arguments: the value it must hold now, '' for none; the new
--          value); refused with 'checkpoint_moved' if another replay moved it.
-- T and X reply with the set's members afterwards (computed here, so the caller's copy can follow).

local CHUNK = 4096 -- unpack() puts every value on Lua's C stack, which holds about 8000

local nops = tonumber(ARGV[1])
local ops = {}
local pos = 2
for i = 1, nops do
  local n = tonumber(ARGV[pos + 3])
  local owner = tonumber(ARGV[pos + 2])
  ops[i] = {
    code = ARGV[pos],
    key = KEYS[tonumber(ARGV[pos + 1])],
    owner = owner > 0 and KEYS[owner] or false,
    first = pos + 4,
    last = pos + 3 + n,
  }
  pos = pos + 4 + n
end

-- 1. checks ----------------------------------------------------------------------------------
local known = {}
local function type_of(key)
  local t = known[key]
  if t == nil then
    t = redis.call('TYPE', key)['ok']
    known[key] = t
  end
  return t
end

local SET_OPS = { A = true, R = true, P = true, C = true, T = true, X = true, Z = true }

for i = 1, nops do
  local op = ops[i]
  local code = op.code
  if SET_OPS[code] then
    local owner_type = type_of(op.owner)
    if owner_type == 'none' then
      return { 0, 'model_not_found', i, op.owner, owner_type }
    elseif owner_type ~= 'hash' then
      return { 0, 'wrong_type', i, op.owner, owner_type }
    end
    local t = type_of(op.key)
    if t ~= 'set' and t ~= 'none' then
      return { 0, 'wrong_type', i, op.key, t }
    end
    known[op.key] = 'set'
  elseif code == 'S' then
    local t = type_of(op.key)
    if t ~= 'hash' and t ~= 'none' then
      return { 0, 'wrong_type', i, op.key, t }
    end
    known[op.key] = 'hash'
  elseif code == 'U' then
    local t = type_of(op.key)
    if t == 'none' then
      return { 0, 'model_not_found', i, op.key, t }
    elseif t ~= 'hash' then
      return { 0, 'wrong_type', i, op.key, t }
    end
  elseif code == 'D' then
    known[op.key] = 'none'
  elseif code == 'J' then
    local t = type_of(op.key)
    if t ~= 'stream' and t ~= 'none' then
      return { 0, 'wrong_type', i, op.key, t }
    end
    known[op.key] = 'stream'
  elseif code == 'K' then
    local t = type_of(op.key)
    if t ~= 'string' and t ~= 'none' then
      return { 0, 'wrong_type', i, op.key, t }
    end
    local now = redis.call('GET', op.key) or ''
    if now ~= ARGV[op.first] then
      return { 0, 'checkpoint_moved', i, op.key, now }
    end
  else
    return redis.error_reply('ledgerset: unknown operation code ' .. tostring(code))
  end
end

-- 2. writes ----------------------------------------------------------------------------------
local function chunked(command, key, first, last)
  local total = 0
  local i = first
  while i <= last do
    local j = math.min(i + CHUNK - 1, last)
    total = total + redis.call(command, key, unpack(ARGV, i, j))
    i = j + 1
  end
  return total
end

local function chunked_list(command, key, list)
  local total = 0
  local i = 1
  while i <= #list do
    local j = math.min(i + CHUNK - 1, #list)
    total = total + redis.call(command, key, unpack(list, i, j))
    i = j + 1
  end
  return total
end

local replies = { 1 }
local set_owners = {}
local set_order = {}
local model_ttls = {}

for i = 1, nops do
  local op = ops[i]
  local code, key = op.code, op.key
  local reply
  if code == 'A' then
    reply = chunked('SADD', key, op.first, op.last)
  elseif code == 'R' then
    reply = chunked('SREM', key, op.first, op.last)
  elseif code == 'P' then
    reply = redis.call('SPOP', key)
  elseif code == 'C' then
    reply = redis.call('DEL', key)
  elseif code == 'T' then
    local keep = {}
    for j = op.first, op.last do
      keep[ARGV[j]] = true
    end
    local leaving = {}
    for _, member in ipairs(redis.call('SMEMBERS', key)) do
      if not keep[member] then
        leaving[#leaving + 1] = member
      end
    end
    chunked_list('SREM', key, leaving)
    reply = redis.call('SMEMBERS', key)
  elseif code == 'X' then
    local arriving, leaving = {}, {}
    for j = op.first, op.last do
      local member = ARGV[j]
      if redis.call('SISMEMBER', key, member) == 1 then
        leaving[#leaving + 1] = member
      else
        arriving[#arriving + 1] = member
      end
    end
    chunked_list('SREM', key, leaving)
    chunked_list('SADD', key, arriving)
    reply = redis.call('SMEMBERS', key)
  elseif code == 'Z' then
    redis.call('DEL', key)
    reply = chunked('SADD', key, op.first, op.last)
  elseif code == 'S' then
    redis.call('DEL', key)
    if op.last > op.first then
      chunked('HSET', key, op.first + 1, op.last)
    end
    local kind, when = string.match(ARGV[op.first], '^(%a+):(%d+)$')
    if kind then
      model_ttls[#model_ttls + 1] = { key, kind, when }
    end
    reply = 1
  elseif code == 'U' then
    chunked('HSET', key, op.first, op.last)
    reply = 1
  elseif code == 'D' then
    reply = redis.call('DEL', key)
  elseif code == 'J' or code == 'K' then
    reply = false -- phase 4
  end
  if SET_OPS[code] and set_owners[key] == nil then
    set_owners[key] = op.owner
    set_order[#set_order + 1] = key
  end
  replies[i + 1] = reply
end

-- 3. TTLs ------------------------------------------------------------------------------------
for _, ttl in ipairs(model_ttls) do
  if ttl[2] == 'pxat' then
    redis.call('PEXPIREAT', ttl[1], ttl[3])
  else
    redis.call('PEXPIRE', ttl[1], ttl[3])
  end
end
for _, key in ipairs(set_order) do
  local remaining = redis.call('PTTL', set_owners[key])
  if remaining > 0 then
    redis.call('PEXPIRE', key, remaining)
  else
    redis.call('PERSIST', key)
  end
end

-- 4. journal ---------------------------------------------------------------------------------
for i = 1, nops do
  local op = ops[i]
  if op.code == 'J' then
    local entry = { op.key }
    local maxlen = tonumber(ARGV[op.first])
    if maxlen > 0 then
      entry[#entry + 1] = 'MAXLEN'
      entry[#entry + 1] = '~'
      entry[#entry + 1] = maxlen
    end
    entry[#entry + 1] = '*'
    for j = op.first + 2, op.last do
      entry[#entry + 1] = ARGV[j]
    end
    local popped = tonumber(ARGV[op.first + 1])
    if popped > 0 then
      entry[#entry + 1] = 'args'
      entry[#entry + 1] = '{"member":' .. (replies[popped + 1] or 'null') .. '}'
    end
    replies[i + 1] = redis.call('XADD', unpack(entry))
  elseif op.code == 'K' then
    redis.call('SET', op.key, ARGV[op.first + 1])
    replies[i + 1] = 1
  end
end

return replies
