-- ledgerset's one server-side program: runs a list of primitive operations all-or-nothing.
--
-- ARGV[1] is the program's header, 9 bytes per operation (struct '>c1HHI4'): its code, the
-- index in KEYS of its key and of its owner's key (0: none), and how many of the following ARGV
-- it takes, in order. Every key the program touches is declared in KEYS (cluster-safe).
--
-- Redis does not roll back a script that fails half-way, so the program runs in phases:
--   1. checks   every precondition of every operation, against the state the earlier operations
--               of this same program will have made (a save makes its model exist for a later add);
--               the first failure returns {0, reason, op, key, actual type} and nothing is written
--   2. writes   every operation, in order; each leaves one reply
--   3. TTLs     a save's TTL on its model key; then every set key written takes its owner's
--               remaining TTL, so a set never outlives its model
--   4. journal  the stream entries recording what was done, and a replay's checkpoint
-- and returns {1, reply of op 1, reply of op 2, ...}.
--
-- Codes: A add, R remove, P pop, C clear, T retain (keep only the arguments), X toggle,
--        Z replace a set (save), S replace a model hash (save; first argument: the expiry,
--        '' none, 'px:<ms>' relative or 'pxat:<unix ms>' absolute), U update hash fields,
--        D delete a key,
--        J append a journal entry (arguments: MAXLEN, 0 for none; the number of a pop op whose
--          member becomes the entry's args, 0 for none; the entry's field/value pairs as one JSON
--          array of strings -- one argument, not two dozen, since packing arguments is costly),
--        K move a replay checkpoint (arguments: the value it must hold now, '' for none; the new
--          value); refused with 'checkpoint_moved' if another replay moved it,
--        E expect a type (argument: 'hash' or 'set'): only a check, refused with 'wrong_type' unless
--          the key holds that type or nothing (a replay's deletes: DEL itself checks nothing).
-- T and X reply with the set's members afterwards (computed here, so the caller's copy can follow).
--
-- This runs on every command, so it avoids work a single write does not need: with one write,
-- the set key's type is not checked beforehand (the write itself fails on a wrong type before
-- changing anything, and that failure becomes the same refusal), and the owner's PTTL, which
-- also says whether it exists, is read once.

local CHUNK = 4096 -- unpack() puts every value on Lua's C stack, which holds about 8000

-- 0. the usual call, fast: one add or remove of fewer than CHUNK members, with or without its
-- journal entry. Same checks, same writes, same reply as the general path below, without the
-- tables and functions it sets up (a third of an immediate aadd's cost on the server).
local header = ARGV[1]
if #header == 9 or (#header == 18 and string.sub(header, 10, 10) == 'J') then
  local code, key_index, owner_index, n = struct.unpack('>c1HHI4', header, 1)
  if (code == 'A' or code == 'R') and n > 0 and n < CHUNK then
    local key, owner = KEYS[key_index], KEYS[owner_index]
    local stream, maxlen, entry = nil, nil, nil
    if #header == 18 then
      local _, stream_index = struct.unpack('>c1HHI4', header, 10)
      stream = KEYS[stream_index]
      local t = redis.call('TYPE', stream)['ok']
      if t ~= 'stream' and t ~= 'none' then
        return { 0, 'wrong_type', 2, stream, t }
      end
      maxlen, entry = tonumber(ARGV[2 + n]), ARGV[4 + n]
    end
    local ttl = redis.call('PTTL', owner)
    if ttl == -2 then
      return { 0, 'model_not_found', 1, owner, 'none' }
    end
    local reply = redis.pcall(code == 'A' and 'SADD' or 'SREM', key, unpack(ARGV, 2, 1 + n))
    if type(reply) == 'table' then
      if string.sub(reply.err, 1, 9) ~= 'WRONGTYPE' then
        return redis.error_reply(reply.err)
      end
      return { 0, 'wrong_type', 1, key, redis.call('TYPE', key)['ok'] }
    end
    if ttl > 0 then
      redis.call('PEXPIRE', key, ttl)
    end
    if not stream then
      return { 1, reply }
    end
    local xadd = { stream }
    if maxlen > 0 then
      xadd[2], xadd[3], xadd[4] = 'MAXLEN', '~', maxlen
    end
    xadd[#xadd + 1] = '*'
    for _, value in ipairs(cjson.decode(entry)) do
      xadd[#xadd + 1] = value
    end
    return { 1, reply, redis.call('XADD', unpack(xadd)) }
  end
end

local SET_CODES = 'ARPCTXZ'

-- The operations, flat: op i is ops[5i-4 .. 5i] = code, key, owner key (or false), first and last
-- ARGV index of its arguments. (One table, not five: this runs on every command.)
local ops = {}
local nops, writes, pos = 0, 0, 2
local at = 1
while at <= #header do
  local code, key, owner, n
  code, key, owner, n, at = struct.unpack('>c1HHI4', header, at)
  local base = nops * 5
  nops = nops + 1
  ops[base + 1] = code
  ops[base + 2] = KEYS[key]
  ops[base + 3] = owner > 0 and KEYS[owner] or false
  ops[base + 4] = pos
  pos = pos + n
  ops[base + 5] = pos - 1
  if code ~= 'J' and code ~= 'K' and code ~= 'E' then
    writes = writes + 1
  end
end

-- 1. checks ----------------------------------------------------------------------------------
-- state[key]: the key's type as this program will have left it so far; for a model seen only
-- as a set's owner, its PTTL (a number: it exists, and with which TTL).
local state = {}

for i = 1, nops do
  local base = i * 5 - 5
  local code, key = ops[base + 1], ops[base + 2]
  if string.find(SET_CODES, code, 1, true) then
    local owner = ops[base + 3]
    local seen = state[owner]
    if seen == nil then
      seen = redis.call('PTTL', owner)
      if seen == -2 then
        seen = 'none'
      end
      state[owner] = seen
    end
    if seen == 'none' then
      return { 0, 'model_not_found', i, owner, 'none' }
    end
    -- A single write finds a wrong type itself, before changing anything; DEL (clear) would not.
    if (writes > 1 or code == 'C') and state[key] == nil then
      local t = redis.call('TYPE', key)['ok']
      if t ~= 'set' and t ~= 'none' then
        return { 0, 'wrong_type', i, key, t }
      end
    end
    state[key] = 'set'
  elseif code == 'J' or code == 'S' or code == 'U' or code == 'K' then
    local t = state[key]
    if t == nil then
      t = redis.call('TYPE', key)['ok']
    elseif type(t) == 'number' then
      t = redis.call('TYPE', key)['ok'] -- an owner seen only through its PTTL: it exists, as what?
    end
    if code == 'J' then
      if t ~= 'stream' and t ~= 'none' then
        return { 0, 'wrong_type', i, key, t }
      end
      t = 'stream'
    elseif code == 'S' then
      if t ~= 'hash' and t ~= 'none' then
        return { 0, 'wrong_type', i, key, t }
      end
      t = 'hash'
    elseif code == 'U' then
      if t == 'none' then
        return { 0, 'model_not_found', i, key, t }
      elseif t ~= 'hash' then
        return { 0, 'wrong_type', i, key, t }
      end
    else -- K
      if t ~= 'string' and t ~= 'none' then
        return { 0, 'wrong_type', i, key, t }
      end
      local now = redis.call('GET', key) or ''
      if now ~= ARGV[ops[base + 4]] then
        return { 0, 'checkpoint_moved', i, key, now }
      end
    end
    state[key] = t
  elseif code == 'D' then
    state[key] = 'none'
  elseif code == 'E' then
    local t = state[key]
    if t == nil or type(t) == 'number' then
      t = redis.call('TYPE', key)['ok']
    end
    if t ~= 'none' and t ~= ARGV[ops[base + 4]] then
      return { 0, 'wrong_type', i, key, t }
    end
  else
    return redis.error_reply('ledgerset: unknown operation code ' .. tostring(code))
  end
end

-- 2. writes ----------------------------------------------------------------------------------
-- A failed write (only possible when the checks above were skipped: a single write on a key of
-- the wrong type) happens before anything was changed; report it as a refusal.
local refused = nil

local function chunked(command, key, first, last)
  if last < first then
    return 0
  elseif last - first < CHUNK then -- the usual case: one call
    local reply = redis.pcall(command, key, unpack(ARGV, first, last))
    if type(reply) == 'table' then
      refused = reply.err
      return 0
    end
    return reply
  end
  local total = 0
  local i = first
  while i <= last do
    local j = math.min(i + CHUNK - 1, last)
    local reply = redis.pcall(command, key, unpack(ARGV, i, j))
    if type(reply) == 'table' then
      refused = reply.err
      return 0
    end
    total = total + reply
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
local set_keys = nil -- set key -> owner, and the set keys in order; only if a set was written
local model_ttls = nil

for i = 1, nops do
  local base = i * 5 - 5
  local code, key, first, last = ops[base + 1], ops[base + 2], ops[base + 4], ops[base + 5]
  local reply = false
  if code == 'A' then
    reply = chunked('SADD', key, first, last)
  elseif code == 'R' then
    reply = chunked('SREM', key, first, last)
  elseif code == 'P' then
    reply = redis.pcall('SPOP', key)
    if type(reply) == 'table' and reply.err then
      refused = reply.err
    end
  elseif code == 'C' then
    reply = redis.call('DEL', key)
  elseif code == 'T' then
    local keep = {}
    for j = first, last do
      keep[ARGV[j]] = true
    end
    local members = redis.pcall('SMEMBERS', key)
    if members.err then
      refused = members.err
    else
      local leaving = {}
      for _, member in ipairs(members) do
        if not keep[member] then
          leaving[#leaving + 1] = member
        end
      end
      chunked_list('SREM', key, leaving)
      reply = redis.call('SMEMBERS', key)
    end
  elseif code == 'X' then
    local arriving, leaving = {}, {}
    for j = first, last do
      local member = ARGV[j]
      local present = redis.pcall('SISMEMBER', key, member)
      if type(present) == 'table' then
        refused = present.err
        break
      elseif present == 1 then
        leaving[#leaving + 1] = member
      else
        arriving[#arriving + 1] = member
      end
    end
    if not refused then
      chunked_list('SREM', key, leaving)
      chunked_list('SADD', key, arriving)
      reply = redis.call('SMEMBERS', key)
    end
  elseif code == 'Z' then
    redis.call('DEL', key)
    reply = chunked('SADD', key, first, last)
  elseif code == 'S' then
    redis.call('DEL', key)
    if last > first then
      chunked('HSET', key, first + 1, last)
    end
    local kind, when = string.match(ARGV[first], '^(%a+):(%d+)$')
    if kind then
      model_ttls = model_ttls or {}
      model_ttls[#model_ttls + 1] = { key, kind, when }
    end
    reply = 1
  elseif code == 'U' then
    chunked('HSET', key, first, last)
    reply = 1
  elseif code == 'D' then
    reply = redis.call('DEL', key)
  end
  if refused then
    if string.sub(refused, 1, 9) ~= 'WRONGTYPE' then
      return redis.error_reply(refused) -- e.g. OOM: the server's own error, nothing written
    end
    return { 0, 'wrong_type', i, key, redis.call('TYPE', key)['ok'] }
  end
  local owner = ops[base + 3]
  if owner then
    set_keys = set_keys or {}
    if set_keys[key] == nil then
      set_keys[key] = owner
      set_keys[#set_keys + 1] = key
    end
  end
  replies[i + 1] = reply
end

-- 3. TTLs ------------------------------------------------------------------------------------
if model_ttls then
  for _, ttl in ipairs(model_ttls) do
    if ttl[2] == 'pxat' then
      redis.call('PEXPIREAT', ttl[1], ttl[3])
    else
      redis.call('PEXPIRE', ttl[1], ttl[3])
    end
  end
end
-- A set key never holds a TTL its model lacks: every write that could leave one (a save, which
-- replaces the set) starts from DEL. So only a model with a TTL needs work here. With a single
-- write, nothing in this program changed the owner's TTL since the checks read it.
if set_keys then
  for _, key in ipairs(set_keys) do
    local owner = set_keys[key]
    local remaining = writes == 1 and state[owner] or redis.call('PTTL', owner)
    if type(remaining) == 'number' and remaining > 0 then
      redis.call('PEXPIRE', key, remaining)
    end
  end
end

-- 4. journal ---------------------------------------------------------------------------------
for i = 1, nops do
  local base = i * 5 - 5
  local code = ops[base + 1]
  if code == 'J' then
    local first = ops[base + 4]
    local entry = { ops[base + 2] }
    local maxlen = tonumber(ARGV[first])
    if maxlen > 0 then
      entry[#entry + 1] = 'MAXLEN'
      entry[#entry + 1] = '~'
      entry[#entry + 1] = maxlen
    end
    entry[#entry + 1] = '*'
    for _, value in ipairs(cjson.decode(ARGV[first + 2])) do
      entry[#entry + 1] = value
    end
    local popped = tonumber(ARGV[first + 1])
    if popped > 0 then
      entry[#entry + 1] = 'args'
      entry[#entry + 1] = '{"member":' .. (replies[popped + 1] or 'null') .. '}'
    end
    replies[i + 1] = redis.call('XADD', unpack(entry))
  elseif code == 'K' then
    redis.call('SET', ops[base + 2], ARGV[ops[base + 4] + 1])
    replies[i + 1] = 1
  end
end

return replies
