#!lua
-- ledgerset's one server-side program: runs a list of primitive operations all-or-nothing.
--
-- The shebang line (no flags, so no 'allow-oom') makes the server refuse the whole program
-- before it starts when memory is over maxmemory, whatever its first write; without it, a
-- program whose first write is SREM or DEL would run past the limit and fail at its first SADD.
-- Every key the program touches is declared in KEYS (cluster-safe, and required by the flags).
--
-- ARGV[1] is the program's header; per operation (struct '>c1BI4', then '>H' per key): its code,
-- how many keys it declares, how many of the following ARGV it takes (in order), and the index
-- in KEYS of each key. A set operation declares its set key, then its owner (the model's key).
--
-- Redis does not roll back a script that fails half-way, so NOTHING THAT CAN FAIL COMES AFTER
-- THE FIRST WRITE. The program runs in phases:
--   1. checks   every precondition of every operation, against the state the earlier operations
--               of this same program will have made (a save makes its model exist for a later
--               add): key types, owners exist, expiries in range, the caller's permission for
--               every command the program will run (redis.acl_check_cmd), room in each stream
--               for its entries. The first failure returns {0, reason, op, key, detail} and
--               nothing is written.
--   2. journal  the stream entries. A pop's member is picked beforehand (SRANDMEMBER, removed
--               below), so its entry is known before anything is written. A program with one
--               entry appends it as its first write, and its failure is a refusal; several
--               entries were proven to fit in phase 1.
--   3. writes   every operation, in order; each leaves one reply
--   4. expiries a save's expiry on its model key; then every set key written takes its owner's
--               exact expiry time (PEXPIRETIME -> PEXPIREAT), so a set never outlives its model
--   5. a replay's checkpoint
-- and returns {1, reply of op 1, reply of op 2, ...}.
--
-- Operations (the OP_ locals below, not a table: one is built on every call; program.py checks
-- that its OPS table holds the same codes):
--   ADD, REMOVE      SADD / SREM the arguments              -> count
--   ADD_EACH,        a transaction's run of adds (removes) to one set, one SADD (SREM) per
--   REMOVE_EACH      command: arguments: the number of commands, each one's member count, then
--                    all their members                      -> each command's count, a list
--   POP              SRANDMEMBER + SREM one member          -> the member, or false
--   CLEAR            DEL the set                            -> 1 if it existed
--   RETAIN, TOGGLE   keep only / toggle the arguments       -> the set's members afterwards
--   MOVE             SMOVE the argument from the set to a second set (keys: set, owner,
--                    destination set, its owner); both owners must exist -> 1 if moved, else 0
--   STORE            replace the set with the arguments after the first (DEL + SADD) -> count.
--                    The first is SUNION, SINTER or SDIFF of the keys after the owner (the
--                    sources): the members are what the client read of that, and the program
--                    is refused ('conflict') unless the sources give exactly those members now.
--                    '' and no sources: a plain replace (a replayed store)
--   REPLACE_SET      DEL + SADD (a save's set)
--   REPLACE_HASH     DEL + HSET (a save's hash); arguments: expiry in ms from now, expiry as
--                    unix ms (0: none; at most one of the two), then field/value pairs (a
--                    snapshot's restore gives VERSION_FIELD among them: later bumps count on)
--   UPDATE_HASH      HSET field/value pairs of an existing hash
--   DELETE           DEL a key
--   JOURNAL          XADD an entry; keys: the stream, and for a chained journal its chain head
--                    (a hash: hash, n and id of the stream's last entry; cut_hash, cut_n and
--                    cut_id of the last one a trim removed); arguments: MAXLEN (0: none), the
--                    number of a POP op whose member, or of a SNAPSHOT op whose read, becomes
--                    the entry's args (0: none), the entry's field/value pairs as one JSON array
--                    of strings (one argument, not two dozen: packing arguments is costly).
--                    Chained, the entry also gets 'n' (its number in the stream), 'prev' (the
--                    hash of the entry before it, '' for the first) and 'hash': sha1hex of
--                    prev, n and the fields' JSON array as appended (with the version a BUMP
--                    put in its args; then the args the server added), one per line, or their HMAC-SHA1 when two more arguments give the pads of the
--                    writer's secret (a keyed chain); the head then names it
--   SNAPSHOT         read a model for a snapshot entry: keys: its model key, then its set keys;
--                    arguments: the set fields of those keys, in order, which must be exactly
--                    those its hash records as sets (else 'snapshot_moved'); no write. The
--                    entry's args: the hash's raw values, each set's raw members, the expiry
--   TRIM             XTRIM MINID; keys: the stream, and its chain head if chained; arguments:
--                    the id to keep from, the id of the last entry it removes (else
--                    'trim_moved'); chained, the head records that entry as the cut
--   CHECKPOINT       move a replay checkpoint; arguments: the value it must hold now ('' for
--                    none), the new value; refused with 'checkpoint_moved' if another replay
--                    moved it
--   EXPECT_TYPE      only a check: the key holds the type given ('hash', 'set') or nothing, else
--                    'wrong_type' (a replay's deletes: DEL itself checks nothing)
--   BUMP             the model's version (hash field VERSION_FIELD) goes up by one: every command
--                    ends with one per model it writes (not a delete). After a POP, only if it
--                    removed a member. Argument '1' (none: 0): the version is recorded in the
--                    command's journal entry, where its args start {"version":null,   -> version
--                    A replay's run of writes to one set bumps once, by their number: a second
--                    argument (then the first is '0')
--   EXPECT_VERSION   only a check: the model's version before this program is the argument,
--                    else 'conflict' with the version found (0: no model) (if_unchanged=True)
--
-- This runs on every command, so the usual calls have fast paths (phase 0: an add or a remove;
-- 0b: a move; each with its bumps and its journal entry, chained or not) that set up no op
-- tables.

local OP_ADD = 'A'
local OP_REMOVE = 'R'
local OP_ADD_EACH = 'a'
local OP_REMOVE_EACH = 'r'
local OP_POP = 'P'
local OP_CLEAR = 'C'
local OP_RETAIN = 'T'
local OP_TOGGLE = 'X'
local OP_MOVE = 'M'
local OP_STORE = 'W'
local OP_REPLACE_SET = 'Z'
local OP_REPLACE_HASH = 'S'
local OP_UPDATE_HASH = 'U'
local OP_DELETE = 'D'
local OP_JOURNAL = 'J'
local OP_CHECKPOINT = 'K'
local OP_EXPECT_TYPE = 'E'
local OP_BUMP = 'V'
local OP_EXPECT_VERSION = 'G'
local OP_SNAPSHOT = 'N'
local OP_TRIM = 'Y'
local VERSION_FIELD = '_version' -- never a field's name: Pydantic fields cannot start with '_'
local CHUNK = 4096 -- unpack() puts every value on Lua's C stack, which holds about 8000
-- Expiries are checked as Lua numbers, exact up to 2^53; a TTL gets half of that so that an
-- absolute time (a replay's entry time + TTL) still fits. program.py holds the same bound.
local MAX_TTL_MS = 4503599627370496 -- 2^52 ms, about 142,000 years
local MAX_AT_MS = 2 * MAX_TTL_MS
local SET_OP_BYTES, JOURNAL_OP_BYTES = 10, 8 -- header bytes of a set op (2 keys), of a journal op
local BUMP_OP_BYTES = 8 -- and of a bump (1 key)
local CHAINED_OP_BYTES = 10 -- and of a chained journal op (2 keys: stream and head)
local MAX_ID_MS = '18446744073709551615' -- a stream id's largest ms part

local function refuse(reason, op, key, detail)
  return { 0, reason, op, key, detail }
end

-- A key's type, for a refusal's report (which must not itself fail on a missing permission).
local function type_for_report(key)
  return redis.pcall('TYPE', key)['ok'] or 'unknown'
end

-- The caller's ACL user may run `command` on `key`: the check for a command the program will
-- run, made before the first write (an ACL failure mid-way would leave the writes applied).
-- A read, or the first write, needs none: its own failure comes before any change.
local may = redis.acl_check_cmd

-- The refusal for `command`, which failed with `err` before anything was written: a missing
-- permission, a key of the wrong type, an exhausted stream; else the server's own error.
local function refused(err, op, key, command)
  if not may(command, key) then -- asked, not read from `err`: its wording differs by server
    return refuse('no_permission', op, key, command)
  elseif string.sub(err, 1, 9) == 'WRONGTYPE' then
    return refuse('wrong_type', op, key, type_for_report(key))
  elseif string.find(err, 'exhausted', 1, true) then
    return refuse('stream_exhausted', op, key, '')
  end
  return redis.error_reply(err)
end

-- SADD/SREM/HSET ARGV[first..last] on key, in chunks (an even CHUNK keeps HSET's pairs
-- together); the total count, or nil and the server's error. An error is only possible at the
-- first chunk (a key of the wrong type, a missing permission), before any change.
local function write_args(command, key, first, last)
  if last - first < CHUNK then -- the usual case, one call (and no loop: this runs on every write)
    if last < first then
      return 0
    end
    local reply = redis.pcall(command, key, unpack(ARGV, first, last))
    if type(reply) == 'table' then
      return nil, reply.err
    end
    return reply
  end
  local total = 0
  for i = first, last, CHUNK do
    local reply = redis.pcall(command, key, unpack(ARGV, i, math.min(i + CHUNK - 1, last)))
    if type(reply) == 'table' then
      return nil, reply.err
    end
    total = total + reply
  end
  return total
end

-- A chain head's state as this program leaves it: head key -> { hash, n } of the last entry.
local chains = {}

-- The raw bytes of a hex digest.
local function unhex(hex)
  return (string.gsub(hex, '..', function(pair) return string.char(tonumber(pair, 16)) end))
end

-- XADD one entry, chained when `head` is given (its type and the caller's HGET/HSET on it were
-- checked before the first write), keyed when `inner` and `outer` (HMAC-SHA1's two pads of the
-- writer's secret) are: its id, or the server's error reply (a table). An XADD is the only call
-- here that can fail, and the head moves only after it succeeded.
local function append(stream, maxlen, fields, args, head, inner, outer)
  local xadd = { stream }
  if maxlen > 0 then
    xadd[2], xadd[3], xadd[4] = 'MAXLEN', '~', maxlen
  end
  xadd[#xadd + 1] = '*'
  for _, value in ipairs(cjson.decode(fields)) do
    xadd[#xadd + 1] = value
  end
  if args then
    xadd[#xadd + 1] = 'args'
    xadd[#xadd + 1] = args
  end
  if not head then
    return redis.pcall('XADD', unpack(xadd))
  end
  local state = chains[head]
  if not state then
    local stored = redis.call('HMGET', head, 'hash', 'n')
    state = { stored[1] or '', tonumber(stored[2] or '0') }
    chains[head] = state
  end
  local n = string.format('%d', state[2] + 1)
  xadd[#xadd + 1], xadd[#xadd + 2], xadd[#xadd + 3], xadd[#xadd + 4] = 'n', n, 'prev', state[1]
  -- Over the fields' JSON as sent (one string: encoding each field here would cost more than
  -- the rest of the call); the checker rebuilds it from the stored fields.
  local signed = state[1] .. '\n' .. n .. '\n' .. fields
  signed = args and signed .. '\n' .. args or signed
  local hash
  if inner then
    hash = redis.sha1hex(outer .. unhex(redis.sha1hex(inner .. signed)))
  else
    hash = redis.sha1hex(signed)
  end
  xadd[#xadd + 1], xadd[#xadd + 2] = 'hash', hash
  local id = redis.pcall('XADD', unpack(xadd))
  if type(id) ~= 'table' then
    state[1], state[2] = hash, state[2] + 1
    redis.call('HSET', head, 'hash', hash, 'n', n, 'id', id, 'keyed', inner and '1' or '0')
  end
  return id
end

-- Whether the caller may keep the chain head `head`, of type `kind`: nil, or the refusal.
local function chain_refusal(head, kind, i)
  if kind ~= 'hash' and kind ~= 'none' then
    return refuse('wrong_type', i, head, kind)
  end
  for _, command in ipairs({ 'HMGET', 'HSET' }) do
    if not may(command, head) then
      return refuse('no_permission', i, head, command)
    end
  end
  return nil
end

-- 0. the usual call, fast: one add or remove of fewer than CHUNK members, with or without its
-- journal entry. Same checks, same writes, same reply as the general path below, with fewer
-- calls: the reads and the first write are checked by running them.
local header = ARGV[1]
local SET_AND_BUMP = SET_OP_BYTES + BUMP_OP_BYTES
if string.sub(header, SET_OP_BYTES + 1, SET_OP_BYTES + 1) == OP_BUMP
    and (#header == SET_AND_BUMP
      or ((#header == SET_AND_BUMP + JOURNAL_OP_BYTES or #header == SET_AND_BUMP + CHAINED_OP_BYTES)
        and string.sub(header, SET_AND_BUMP + 1, SET_AND_BUMP + 1) == OP_JOURNAL)) then
  local code, _, n, key_index, owner_index = struct.unpack('>c1BI4>H>H', header, 1)
  local _, _, bump_n, bump_index = struct.unpack('>c1BI4>H', header, SET_OP_BYTES + 1)
  if (code == OP_ADD or code == OP_REMOVE) and n > 0 and n < CHUNK
      and bump_n == 0 and bump_index == owner_index then
    local key, owner = KEYS[key_index], KEYS[owner_index]
    local command = code == OP_ADD and 'SADD' or 'SREM'
    local expires = redis.pcall('PEXPIRETIME', owner)
    if type(expires) == 'table' then
      return refused(expires.err, 1, owner, 'PEXPIRETIME')
    elseif expires == -2 then
      return refuse('model_not_found', 1, owner, 'none')
    elseif expires > 0 and not may('PEXPIREAT', key) then
      return refuse('no_permission', 1, key, 'PEXPIREAT')
    end
    local version = redis.pcall('HGET', owner, VERSION_FIELD)
    if type(version) ~= 'table' then
      if not may('HSET', owner) then
        return refuse('no_permission', 2, owner, 'HSET')
      end
      version = (tonumber(version) or 0) + 1
    elseif string.sub(version.err, 1, 9) == 'WRONGTYPE' then
      version = false -- the owner's hash was overwritten: no version to bump (see BUMP)
    else
      return refused(version.err, 2, owner, 'HGET')
    end
    local id = nil
    if #header > SET_AND_BUMP then
      -- The entry is the first write: the set's write after it must be proven unable to fail.
      local kind = redis.pcall('TYPE', key)
      if kind.err then
        return refused(kind.err, 1, key, 'TYPE')
      elseif kind.ok ~= 'set' and kind.ok ~= 'none' then
        return refuse('wrong_type', 1, key, kind.ok)
      elseif not may(command, key) then
        return refuse('no_permission', 1, key, command)
      end
      local head = nil
      if #header == SET_AND_BUMP + CHAINED_OP_BYTES then
        local _, _, _, _, head_index = struct.unpack('>c1BI4>H>H', header, SET_AND_BUMP + 1)
        head = KEYS[head_index]
        -- The head's read is its type check: a read's failure comes before any change.
        local stored = redis.pcall('HMGET', head, 'hash', 'n')
        if stored.err then
          return refused(stored.err, 3, head, 'HMGET')
        elseif not may('HSET', head) then
          return refuse('no_permission', 3, head, 'HSET')
        end
        chains[head] = { stored[1] or '', tonumber(stored[2] or '0') }
      end
      local _, _, _, stream_index = struct.unpack('>c1BI4>H', header, SET_AND_BUMP + 1)
      local stream = KEYS[stream_index]
      -- A keyed chain's op has two more arguments, its pads: nothing follows them here.
      id = append(stream, tonumber(ARGV[2 + n]), ARGV[4 + n], nil, head, ARGV[5 + n], ARGV[6 + n])
      if type(id) == 'table' then
        return refused(id.err, 3, stream, 'XADD')
      end
    end
    local reply, err = write_args(command, key, 2, 1 + n)
    if not reply then -- only unjournaled, where the write is the first one
      return refused(err, 1, key, command)
    end
    if version then
      redis.call('HSET', owner, VERSION_FIELD, version)
    end
    if expires > 0 then
      redis.call('PEXPIREAT', key, expires)
    end
    return { 1, reply, version, id }
  end
end

-- 0b. a lone move (amove), fast in the same way: its op (4 keys, 1 argument), a bump of each of
-- its one or two owners, with or without its journal entry (chained or not).
local MOVE_OP_BYTES = 14
if string.sub(header, 1, 1) == OP_MOVE and #header >= MOVE_OP_BYTES + BUMP_OP_BYTES
    and #header <= MOVE_OP_BYTES + 2 * BUMP_OP_BYTES + CHAINED_OP_BYTES then
  local _, _, n, key_index, owner_index, dest_index, dest_owner_index =
    struct.unpack('>c1BI4>H>H>H>H', header, 1)
  local bumped, journal_at, head_index = {}, nil, nil
  local at = MOVE_OP_BYTES + 1
  while at <= #header do -- every op's header is at least 8 bytes: each read below is whole
    local code, nkeys, nargs, index = struct.unpack('>c1BI4>H', header, at)
    if code == OP_BUMP and nkeys == 1 and nargs == 0 and not journal_at then
      bumped[#bumped + 1] = index
    elseif code == OP_JOURNAL and not journal_at and (nkeys == 1 or nkeys == 2) then
      journal_at = at
      if nkeys == 2 then
        head_index = struct.unpack('>H', header, at + 8)
      end
    else
      bumped = nil
      break
    end
    at = at + 6 + 2 * nkeys
  end
  local owner, dest_owner = KEYS[owner_index], KEYS[dest_owner_index]
  local owners = owner == dest_owner and { owner_index } or { owner_index, dest_owner_index }
  if n == 1 and bumped and #bumped == #owners and bumped[1] == owners[1]
      and bumped[#bumped] == owners[#owners] then
    local key, dest = KEYS[key_index], KEYS[dest_index]
    local expires, versions = {}, {}
    for k, index in ipairs(owners) do
      local model = KEYS[index]
      local expiry = redis.pcall('PEXPIRETIME', model)
      if type(expiry) == 'table' then
        return refused(expiry.err, 1, model, 'PEXPIRETIME')
      elseif expiry == -2 then
        return refuse('model_not_found', 1, model, 'none')
      end
      expires[model] = expiry
      local version = redis.pcall('HGET', model, VERSION_FIELD)
      if type(version) ~= 'table' then
        if not may('HSET', model) then
          return refuse('no_permission', 1 + k, model, 'HSET')
        end
        versions[k] = (tonumber(version) or 0) + 1
      elseif string.sub(version.err, 1, 9) == 'WRONGTYPE' then
        versions[k] = false -- an overwritten hash: no version to bump (see BUMP)
      else
        return refused(version.err, 1 + k, model, 'HGET')
      end
    end
    for _, set in ipairs({ { key, owner }, { dest, dest_owner } }) do
      if not may('SMOVE', set[1]) then
        return refuse('no_permission', 1, set[1], 'SMOVE')
      elseif expires[set[2]] > 0 and not may('PEXPIREAT', set[1]) then
        return refuse('no_permission', 1, set[1], 'PEXPIREAT')
      end
    end
    local id = nil
    if journal_at then
      -- The entry is the first write: the move after it must be proven unable to fail.
      for _, set_key in ipairs({ key, dest }) do
        local kind = redis.pcall('TYPE', set_key)
        if kind.err then
          return refused(kind.err, 1, set_key, 'TYPE')
        elseif kind.ok ~= 'set' and kind.ok ~= 'none' then
          return refuse('wrong_type', 1, set_key, kind.ok)
        end
      end
      local head = nil
      if head_index then
        head = KEYS[head_index]
        -- The head's read is its type check: a read's failure comes before any change.
        local stored = redis.pcall('HMGET', head, 'hash', 'n')
        if stored.err then
          return refused(stored.err, 2 + #owners, head, 'HMGET')
        elseif not may('HSET', head) then
          return refuse('no_permission', 2 + #owners, head, 'HSET')
        end
        chains[head] = { stored[1] or '', tonumber(stored[2] or '0') }
      end
      local _, _, _, stream_index = struct.unpack('>c1BI4>H', header, journal_at)
      local stream = KEYS[stream_index]
      -- A keyed chain's op has two more arguments, its pads: nothing follows them here.
      id = append(stream, tonumber(ARGV[3]), ARGV[5], nil, head, ARGV[6], ARGV[7])
      if type(id) == 'table' then
        return refused(id.err, 2 + #owners, stream, 'XADD')
      end
    end
    local moved = redis.pcall('SMOVE', key, dest, ARGV[2])
    if type(moved) == 'table' then -- only unjournaled, where the move is the first write
      local kind = type_for_report(key)
      return refused(moved.err, 1, (kind == 'set' or kind == 'none') and dest or key, 'SMOVE')
    end
    local replies = { 1, moved }
    for k, index in ipairs(owners) do
      if versions[k] then
        redis.call('HSET', KEYS[index], VERSION_FIELD, versions[k])
      end
      replies[#replies + 1] = versions[k]
    end
    for _, set in ipairs({ { key, owner }, { dest, dest_owner } }) do
      if expires[set[2]] > 0 then
        redis.call('PEXPIREAT', set[1], expires[set[2]])
      end
    end
    replies[#replies + 1] = id
    return replies
  end
end

-- The operations, as records (a transaction's can be thousands: `keys`, a table of every key,
-- only for the ops that read it, those of more than two keys and snapshots).
local ops = {}
local at, pos = 1, 2
local NO_KEYS = {}
while at <= #header do
  local code, nkeys, n, key, owner
  code, nkeys, n, at = struct.unpack('>c1BI4', header, at)
  local keys = NO_KEYS
  if nkeys == 2 and code ~= OP_SNAPSHOT then
    key, owner, at = struct.unpack('>H>H', header, at)
    key, owner = KEYS[key], KEYS[owner]
  elseif nkeys == 1 then
    key, at = struct.unpack('>H', header, at)
    key = KEYS[key]
  else
    keys = {}
    for k = 1, nkeys do
      keys[k], at = struct.unpack('>H', header, at)
      keys[k] = KEYS[keys[k]]
    end
    key, owner = keys[1], keys[2]
  end
  ops[#ops + 1] = {
    code = code, key = key, owner = owner, keys = keys, first = pos, last = pos + n - 1,
  }
  pos = pos + n
end

-- From here on, each permission is asked once per command and key: a transaction of a thousand
-- adds to one set needs one answer for SADD there, not a thousand. (The fast paths above ask
-- each once anyway, and a table would only cost them.)
local allowed = {} -- command -> key -> whether the caller may run it there
local ask = redis.acl_check_cmd
may = function(command, key, ...)
  if key == nil then
    return ask(command)
  elseif select('#', ...) > 0 then
    return ask(command, key, ...)
  end
  local by_key = allowed[command]
  if not by_key then
    by_key = {}
    allowed[command] = by_key
  end
  local answer = by_key[key]
  if answer == nil then
    answer = ask(command, key)
    by_key[key] = answer
  end
  return answer
end

local SET_OPS = {
  [OP_ADD] = { 'SADD' }, [OP_REMOVE] = { 'SREM' }, [OP_ADD_EACH] = { 'SADD' },
  [OP_REMOVE_EACH] = { 'SREM' }, [OP_POP] = { 'SRANDMEMBER', 'SREM' },
  [OP_CLEAR] = { 'DEL' }, [OP_RETAIN] = { 'SMEMBERS', 'SREM' },
  [OP_TOGGLE] = { 'SISMEMBER', 'SREM', 'SADD', 'SMEMBERS' }, [OP_REPLACE_SET] = { 'DEL', 'SADD' },
  [OP_MOVE] = { 'SMOVE' }, [OP_STORE] = { 'DEL', 'SADD' },
}

-- 1. checks ----------------------------------------------------------------------------------
local kinds = {}    -- key -> its Redis type as this program will have left it so far
local expiries = {} -- model key -> its absolute expiry (unix ms; -1: none) as the program leaves it
local set_keys = {} -- the set keys written, in order; set_keys[key] = its owner
local entries = {}  -- stream -> how many entries this program appends to it
local stored = {}   -- model key -> its version before this program (0: none)
local versions = {} -- model key -> its version as the program leaves it so far
local recorded = {} -- model key -> the versions its journaled commands record, in order
local nentries = 0
local now_ms = nil
local snapshots = {} -- op number -> a SNAPSHOT's entry args (false: the model is gone)
local trims = {}     -- op number -> the entry a chained TRIM cuts at: { id, hash, n }

-- An integer number of ms in 1..limit (an expiry argument), or nil.
local function expiry_ms(value, limit)
  if not string.match(value, '^%d+$') then
    return nil
  end
  local ms = tonumber(value)
  if ms < 1 or ms > limit then
    return nil
  end
  return ms
end

-- The key's type so far, read once (nil and the refusal if the caller may not read it).
local function kind_of(key, i)
  local kind = kinds[key]
  if kind == nil then
    if not may('TYPE', key) then
      return nil, refuse('no_permission', i, key, 'TYPE')
    end
    kind = redis.call('TYPE', key)['ok']
    kinds[key] = kind
  end
  return kind
end

-- The version of model `key` before this program (0 without one), read once.
local function version_before(key, i)
  local version = stored[key]
  if version == nil then
    if not may('HGET', key) then
      return nil, refuse('no_permission', i, key, 'HGET')
    end
    version = tonumber(redis.call('HGET', key, VERSION_FIELD)) or 0
    stored[key] = version
  end
  return version
end

-- A set op's checks on one set `key` of model `owner`: the owner exists, the key holds a set or
-- nothing, the caller may run `commands` on it. Records the set as written (its expiry follows
-- its owner's, phase 4). Returns the refusal, if any.
local function check_set(i, key, owner, commands)
  if expiries[owner] == nil and kinds[owner] ~= 'none' then
    if not may('PEXPIRETIME', owner) then
      return refuse('no_permission', i, owner, 'PEXPIRETIME')
    end
    local expires = redis.call('PEXPIRETIME', owner)
    if expires == -2 then
      kinds[owner] = 'none'
    else
      expiries[owner] = expires
    end
  end
  if kinds[owner] == 'none' then
    return refuse('model_not_found', i, owner, 'none')
  end
  local kind, refusal = kind_of(key, i)
  if refusal then
    return refusal
  elseif kind ~= 'set' and kind ~= 'none' then
    return refuse('wrong_type', i, key, kind)
  end
  for _, command in ipairs(commands) do
    if not may(command, key) then
      return refuse('no_permission', i, key, command)
    end
  end
  kinds[key] = 'set'
  if set_keys[key] == nil then
    set_keys[key] = owner
    set_keys[#set_keys + 1] = key
  end
  return nil
end

-- A store's sources: each a set (or nothing) the caller may read, and together they must give
-- exactly the members the client read and sent (no source changed meanwhile).
local function check_sources(i, op)
  local sources, algebra = {}, ARGV[op.first]
  for k = 3, #op.keys do
    local source = op.keys[k]
    local kind, refusal = kind_of(source, i)
    if refusal then
      return refusal
    elseif kind ~= 'set' and kind ~= 'none' then
      return refuse('wrong_type', i, source, kind)
    elseif not may(algebra, source) then
      return refuse('no_permission', i, source, algebra)
    end
    sources[#sources + 1] = source
  end
  local sent = {}
  for j = op.first + 1, op.last do
    sent[ARGV[j]] = true
  end
  local now = redis.call(algebra, unpack(sources))
  if #now ~= op.last - op.first then
    return refuse('conflict', i, op.key, '')
  end
  for _, member in ipairs(now) do
    if not sent[member] then
      return refuse('conflict', i, op.key, '')
    end
  end
  return nil
end

for i, op in ipairs(ops) do
  local code, key = op.code, op.key
  local commands = SET_OPS[code]
  if commands then
    local refusal = check_set(i, key, op.owner, commands)
    if not refusal and code == OP_MOVE then -- the destination: a set of a model too
      refusal = check_set(i, op.keys[3], op.keys[4], commands)
    end
    if refusal then
      return refusal
    end
    if code == OP_POP and #ops > 3 then
      return redis.error_reply('ledgerset: a pop must be the only write of its program')
    end
    if code == OP_STORE and #op.keys > 2 then
      refusal = check_sources(i, op)
      if refusal then
        return refusal
      end
    end
  elseif code == OP_DELETE then
    if not may('DEL', key) then
      return refuse('no_permission', i, key, 'DEL')
    end
    kinds[key], expiries[key], versions[key] = 'none', nil, 0
  else
    local kind, refusal = kind_of(key, i)
    if refusal then
      return refusal
    end
    if code == OP_REPLACE_HASH then
      if kind ~= 'hash' and kind ~= 'none' then
        return refuse('wrong_type', i, key, kind)
      elseif not may('DEL', key) then
        return refuse('no_permission', i, key, 'DEL')
      elseif op.last > op.first + 1 and not may('HSET', key) then
        return refuse('no_permission', i, key, 'HSET')
      end
      local ttl, expire_at = ARGV[op.first], ARGV[op.first + 1]
      local expires = -1
      if ttl ~= '0' then
        expires = expiry_ms(ttl, MAX_TTL_MS)
        if not expires then
          return refuse('expiry_out_of_range', i, key, ttl)
        end
        if not now_ms then
          if not may('TIME') then
            return refuse('no_permission', i, key, 'TIME')
          end
          local time = redis.call('TIME')
          now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        end
        expires = now_ms + expires
      elseif expire_at ~= '0' then
        expires = expiry_ms(expire_at, MAX_AT_MS)
        if not expires then
          return refuse('expiry_out_of_range', i, key, expire_at)
        end
      end
      if expires > 0 and not may('PEXPIREAT', key) then
        return refuse('no_permission', i, key, 'PEXPIREAT')
      end
      kinds[key], expiries[key] = 'hash', expires
      -- A snapshot's restore (replay) writes the version among its fields, and bumps none:
      -- a later bump of this program counts from it.
      for j = op.first + 2, op.last, 2 do
        if ARGV[j] == VERSION_FIELD then
          versions[key] = tonumber(ARGV[j + 1]) or 0
        end
      end
    elseif code == OP_UPDATE_HASH then
      if kind == 'none' then
        return refuse('model_not_found', i, key, kind)
      elseif kind ~= 'hash' then
        return refuse('wrong_type', i, key, kind)
      elseif not may('HSET', key) then
        return refuse('no_permission', i, key, 'HSET')
      end
    elseif code == OP_JOURNAL then
      if kind ~= 'stream' and kind ~= 'none' then
        return refuse('wrong_type', i, key, kind)
      elseif not may('XADD', key) then
        return refuse('no_permission', i, key, 'XADD')
      end
      if op.owner then
        local head_kind, refusal = kind_of(op.owner, i)
        refusal = refusal or chain_refusal(op.owner, head_kind, i)
        if refusal then
          return refusal
        end
        kinds[op.owner] = 'hash'
      end
      kinds[key] = 'stream'
      entries[key] = (entries[key] or 0) + 1
      nentries = nentries + 1
    elseif code == OP_CHECKPOINT then
      if kind ~= 'string' and kind ~= 'none' then
        return refuse('wrong_type', i, key, kind)
      end
      for _, command in ipairs({ 'GET', 'SET' }) do
        if not may(command, key) then
          return refuse('no_permission', i, key, command)
        end
      end
      local now = redis.call('GET', key) or ''
      if now ~= ARGV[op.first] then
        return refuse('checkpoint_moved', i, key, now)
      end
      kinds[key] = 'string'
    elseif code == OP_EXPECT_TYPE then
      if kind ~= 'none' and kind ~= ARGV[op.first] then
        return refuse('wrong_type', i, key, kind)
      end
    elseif code == OP_BUMP then
      if kind == 'none' then
        return refuse('model_not_found', i, key, kind)
      elseif kind ~= 'hash' then
        -- Another client overwrote the model's hash: a set write still goes on (a save or an
        -- update of it is refused), and there is no version to bump.
        op.skip = true
      elseif not may('HSET', key) then
        return refuse('no_permission', i, key, 'HSET')
      end
      local version = versions[key]
      if version == nil and not op.skip then
        version, refusal = version_before(key, i)
        if refusal then
          return refusal
        end
      end
      if op.skip then
        op.version = false
      else
        local by = op.last > op.first and tonumber(ARGV[op.first + 1]) or 1
        versions[key] = version + by
        op.version = version + by
      end
      -- Its own first argument: with none, ARGV[op.first] is the next op's (a member `1`).
      if op.last >= op.first and ARGV[op.first] == '1' and not op.skip then
        recorded[key] = recorded[key] or {}
        table.insert(recorded[key], op.version)
      end
    elseif code == OP_EXPECT_VERSION then
      if kind ~= 'hash' and kind ~= 'none' then
        return refuse('wrong_type', i, key, kind)
      end
      local version, refusal = version_before(key, i)
      if refusal then
        return refusal
      elseif tostring(version) ~= ARGV[op.first] then
        return refuse('conflict', i, key, tostring(version))
      end
    elseif code == OP_SNAPSHOT then
      if kind == 'none' then
        snapshots[i] = false -- deleted since it was found: no entry (its delete has one)
      elseif kind ~= 'hash' then
        return refuse('wrong_type', i, key, kind)
      else
        for _, command in ipairs({ 'HGETALL', 'PEXPIRETIME' }) do
          if not may(command, key) then
            return refuse('no_permission', i, key, command)
          end
        end
        local raw = redis.call('HGETALL', key)
        local fields, marked, nmarked = {}, {}, 0
        for j = 1, #raw, 2 do
          fields[raw[j]] = raw[j + 1]
          if raw[j + 1] == 'true' then -- the hash's marker of a set field holding a set
            marked[raw[j]], nmarked = true, nmarked + 1
          end
        end
        if op.last - op.first + 1 ~= nmarked then
          return refuse('snapshot_moved', i, key, '')
        end
        local sets = {}
        for j = op.first, op.last do
          local field, set_key = ARGV[j], op.keys[2 + j - op.first]
          if not marked[field] then
            return refuse('snapshot_moved', i, key, field)
          end
          local set_kind, refusal = kind_of(set_key, i)
          if refusal then
            return refusal
          elseif set_kind ~= 'set' and set_kind ~= 'none' then
            return refuse('wrong_type', i, set_key, set_kind)
          elseif not may('SMEMBERS', set_key) then
            return refuse('no_permission', i, set_key, 'SMEMBERS')
          end
          sets[field] = redis.call('SMEMBERS', set_key) -- none: {}, read back as no members
        end
        local expires = redis.call('PEXPIRETIME', key)
        -- Raw values, as strings: spliced into the JSON they could forge the entry.
        snapshots[i] = cjson.encode({
          fields = fields, sets = sets, expire_at_ms = expires > 0 and expires or cjson.null,
        })
      end
    elseif code == OP_TRIM then
      if kind ~= 'stream' then
        return refuse('wrong_type', i, key, kind)
      end
      for _, command in ipairs({ 'XREVRANGE', 'XTRIM' }) do
        if not may(command, key) then
          return refuse('no_permission', i, key, command)
        end
      end
      local last = redis.call('XREVRANGE', key, '(' .. ARGV[op.first], '-', 'COUNT', 1)[1]
      if not last or last[1] ~= ARGV[op.first + 1] then
        return refuse('trim_moved', i, key, last and last[1] or '')
      end
      if op.owner then
        local head_kind, refusal = kind_of(op.owner, i)
        refusal = refusal or chain_refusal(op.owner, head_kind, i)
        if refusal then
          return refusal
        end
        local cut = { id = last[1], hash = '', n = '0' }
        for j = 1, #last[2], 2 do
          if last[2][j] == 'hash' or last[2][j] == 'n' then
            cut[last[2][j]] = last[2][j + 1]
          end
        end
        trims[i] = cut
        kinds[op.owner] = 'hash'
      end
    else
      return redis.error_reply('ledgerset: unknown operation code ' .. tostring(code))
    end
  end
end

-- Every set key written takes its owner's final expiry: may the caller set it?
for _, key in ipairs(set_keys) do
  local expires = expiries[set_keys[key]]
  if expires and expires > 0 and not may('PEXPIREAT', key) then
    return refuse('no_permission', 1, key, 'PEXPIREAT')
  end
end

-- Several entries: the first could land and a later one fail, so prove each stream has room.
-- XADD fails only once the last id's ms part is the largest possible and its seq runs out.
if nentries > 1 then
  for i, op in ipairs(ops) do
    local stream = op.key
    if op.code == OP_JOURNAL and kinds[stream] == 'stream' and entries[stream] then
      local count = entries[stream]
      entries[stream] = nil
      if not may('XINFO', 'STREAM', stream) then
        return refuse('no_permission', i, stream, 'XINFO')
      end
      local info = redis.pcall('XINFO', 'STREAM', stream)
      if type(info) == 'table' and not info.err then
        for j = 1, #info, 2 do
          if info[j] == 'last-generated-id' then
            local ms, seq = string.match(info[j + 1], '^(%d+)-(%d+)$')
            -- seq within 10^7 of 2^64 - 1 = 18446744073709551615: compare its last 7 digits.
            if ms == MAX_ID_MS and #seq == 20 and string.sub(seq, 1, 13) == '1844674407370'
                and tonumber(string.sub(seq, 14)) + count > 9551615 then
              return refuse('stream_exhausted', i, stream, info[j + 1])
            end
          end
        end
      end
    end
  end
end

-- A pop's journal args, built with cjson: the member is bytes any client may have written, and
-- spliced into JSON it could forge the entry. A number is kept as written (cjson would round it
-- to 14 digits), once it is proven to be one; anything that is not a JSON string, number or
-- boolean is recorded as its bytes in hex, with member null.
local function popped_args(member)
  if not member then
    return '{"member":null}'
  elseif member == 'true' or member == 'false' then
    return '{"member":' .. member .. '}'
  end
  local number = string.match(member, '^%-?[1-9]%d*(.*)$') or string.match(member, '^%-?0(.*)$')
  if number then
    number = string.match(number, '^%.%d+(.*)$') or number
    if number == '' or string.match(number, '^[eE][-+]?%d+$') then
      return '{"member":' .. member .. '}'
    end
  elseif string.sub(member, 1, 1) == '"' then
    local ok, value = pcall(cjson.decode, member)
    if ok and type(value) == 'string' then
      return cjson.encode({ member = value })
    end
  end
  local hex = string.gsub(member, '.', function(c) return string.format('%02x', string.byte(c)) end)
  return cjson.encode({ member = cjson.null, member_hex = hex })
end

-- An entry's fields with the version its model write made in its args, in place of the
-- client's `{"version":null,` (it only knows the version once the program runs). That text can
-- only be the start of the args: inside any other field's string a quote is escaped.
local VERSION_SLOT = '"args","{\\"version\\":null,'
local function with_version(fields)
  local at = string.find(fields, VERSION_SLOT, 1, true)
  if not at then
    return fields
  end
  local key = cjson.decode(fields)[6] -- after "cmd", name, "v", version, "key"
  local version = table.remove(recorded[key] or {}, 1)
  if version == nil then
    return fields -- cannot happen: a model write journaled without its bump
  end
  return string.sub(fields, 1, at - 1) .. '"args","{\\"version\\":' .. string.format('%d', version)
    .. ',' .. string.sub(fields, at + #VERSION_SLOT)
end

-- 2. journal ---------------------------------------------------------------------------------
local replies = { 1 }
local popped = {} -- op number -> the member its pop removes (false: the set was empty)
for i, op in ipairs(ops) do
  if op.code == OP_POP then
    popped[i] = redis.call('SRANDMEMBER', op.key)
  end
end
for i, op in ipairs(ops) do
  if op.code == OP_JOURNAL then
    local first = op.first
    local source = tonumber(ARGV[first + 1])
    local args = nil
    if source > 0 then
      if ops[source].code == OP_SNAPSHOT then
        args = snapshots[source]
      else
        args = popped_args(popped[source])
      end
    end
    local id = false -- a snapshot of a model gone since it was found: no entry
    if args ~= false then
      local keyed = op.last - first == 4 -- with the HMAC pads of a keyed chain
      id = append(op.key, tonumber(ARGV[first]), with_version(ARGV[first + 2]), args, op.owner,
        keyed and ARGV[first + 3] or nil, keyed and ARGV[first + 4] or nil)
    end
    if type(id) == 'table' then
      if nentries == 1 then -- the first write: nothing applied yet
        return refused(id.err, i, op.key, 'XADD')
      end
      return redis.error_reply(id.err) -- unreachable: checked above
    end
    replies[i + 1] = id
  end
end

-- 3. writes ----------------------------------------------------------------------------------
-- A model's version is written once, when the program has no more bumps of it, or before
-- anything else writes its hash: a transaction of a thousand set writes bumps it a thousand
-- times, and only the last HSET would count. Each bump still replies with its own version.
local unwritten = {} -- model key -> the version its bumps reached, not yet written
local function write_version(key)
  local version = unwritten[key]
  if version then
    redis.call('HSET', key, VERSION_FIELD, version)
    unwritten[key] = nil
  end
end

local function write_list(command, key, list)
  for i = 1, #list, CHUNK do
    redis.call(command, key, unpack(list, i, math.min(i + CHUNK - 1, #list)))
  end
end

local function members(key)
  return redis.call('SMEMBERS', key)
end

for i, op in ipairs(ops) do
  local code, key, first, last = op.code, op.key, op.first, op.last
  local reply = nil
  if code == OP_ADD then
    reply = write_args('SADD', key, first, last)
  elseif code == OP_REMOVE then
    reply = write_args('SREM', key, first, last)
  elseif code == OP_ADD_EACH or code == OP_REMOVE_EACH then
    local command = code == OP_ADD_EACH and 'SADD' or 'SREM'
    local runs = tonumber(ARGV[first])
    local at = first + runs + 1
    reply = {}
    for k = 1, runs do
      local n = tonumber(ARGV[first + k])
      reply[k] = write_args(command, key, at, at + n - 1)
      at = at + n
    end
  elseif code == OP_POP then
    reply = popped[i]
    if reply then
      redis.call('SREM', key, reply)
    end
  elseif code == OP_CLEAR or code == OP_DELETE then
    write_version(key)
    reply = redis.call('DEL', key)
  elseif code == OP_MOVE then
    reply = redis.call('SMOVE', key, op.keys[3], ARGV[first])
  elseif code == OP_RETAIN then
    local keep, leaving = {}, {}
    for j = first, last do
      keep[ARGV[j]] = true
    end
    for _, member in ipairs(members(key)) do
      if not keep[member] then
        leaving[#leaving + 1] = member
      end
    end
    write_list('SREM', key, leaving)
    reply = members(key)
  elseif code == OP_TOGGLE then
    local arriving, leaving = {}, {}
    for j = first, last do
      local member = ARGV[j]
      if redis.call('SISMEMBER', key, member) == 1 then
        leaving[#leaving + 1] = member
      else
        arriving[#arriving + 1] = member
      end
    end
    write_list('SREM', key, leaving)
    write_list('SADD', key, arriving)
    reply = members(key)
  elseif code == OP_REPLACE_SET then
    redis.call('DEL', key)
    reply = write_args('SADD', key, first, last)
  elseif code == OP_STORE then
    redis.call('DEL', key)
    reply = write_args('SADD', key, first + 1, last)
  elseif code == OP_REPLACE_HASH then
    write_version(key)
    redis.call('DEL', key)
    if last > first + 1 then
      write_args('HSET', key, first + 2, last)
    end
    reply = 1
  elseif code == OP_UPDATE_HASH then
    write_version(key)
    write_args('HSET', key, first, last)
    reply = 1
  elseif code == OP_BUMP then
    local pop = ops[i - 1]
    if op.skip or (pop and pop.code == OP_POP and not popped[i - 1]) then
      reply = false -- an empty set's pop changed nothing; an overwritten hash has no version
    else
      unwritten[key] = op.version
      reply = op.version
    end
  elseif code == OP_EXPECT_TYPE or code == OP_EXPECT_VERSION then
    reply = 1 -- a reply for every op: a hole would cut the replies short
  elseif code == OP_SNAPSHOT then
    reply = snapshots[i] and 1 or 0
  elseif code == OP_TRIM then
    reply = redis.call('XTRIM', key, 'MINID', ARGV[first])
    local cut = trims[i]
    if cut then
      redis.call('HSET', op.owner, 'cut_id', cut.id, 'cut_hash', cut.hash, 'cut_n', cut.n)
    end
  end
  if reply ~= nil then
    replies[i + 1] = reply
  end
end

for _, op in ipairs(ops) do
  if op.code == OP_BUMP then
    write_version(op.key)
  end
end

-- 4. expiries --------------------------------------------------------------------------------
for _, op in ipairs(ops) do
  if op.code == OP_REPLACE_HASH and expiries[op.key] and expiries[op.key] > 0 then
    redis.call('PEXPIREAT', op.key, expiries[op.key])
  end
end
-- A set key never holds an expiry its model lacks: every write that could leave one (a save,
-- which replaces the set) starts from DEL. So only an owner with an expiry needs work here.
for _, key in ipairs(set_keys) do
  local expires = expiries[set_keys[key]]
  if expires and expires > 0 then
    redis.call('PEXPIREAT', key, expires)
  end
end

-- 5. a replay's checkpoint -------------------------------------------------------------------
for i, op in ipairs(ops) do
  if op.code == OP_CHECKPOINT then
    redis.call('SET', op.key, ARGV[op.first + 1])
    replies[i + 1] = 1
  end
end

return replies
