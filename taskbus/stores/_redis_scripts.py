"""The Redis store's Lua scripts: every change is one of them, so it is one atomic
step on the server, its events logged in the same step.

Keys (``P`` is the store's prefix, ``"taskbus:"`` by default):

- ``P t:<id>``: a task, a hash of its non-null columns (and ``_seq``, its
  insertion number, which breaks ties in the queue as SQLite's rowid does);
- ``P all``, ``P s:<state>``: ids by creation time (all, and by state);
- ``P fin``: final tasks by finish time (purging);
- ``P n``: counts, ``<state>:<type>`` -> tasks (stats, per-type limits);
- ``P q:<type>:<priority>``: ready queued tasks by queued_at, members
  ``<seq, 16 digits>|<id>`` (FIFO, then insertion); ``P qt``: type -> ready
  count; ``P delayed``: queued tasks with a not-before time, by it (moved into
  the ready sets by `acquire` once due);
- ``P leases``: running tasks by lease end; ``P nolease``: running tasks with
  none; ``P w:<worker>``: the running tasks a worker holds;
- ``P k:<scope>``: the ids submitted with one idempotency key scope;
- ``P b:<batch>``: the tasks of one batch by insertion (``_seq``);
- ``P events``: the event log, a stream (``MAXLEN ~ keep``); the entry id is the
  event id, fields ``n`` (name) and ``b`` (JSON body).

Every script takes the prefix as ``ARGV[1]``; numbers it writes come from the
caller as text (Lua would round a float it formatted itself).
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "DELETE", "EXPIRED", "WRITE"]

_LIBRARY = r"""
local P = ARGV[1]
local IDX = {'state', 'type', 'priority', 'queued_at', 'not_before', 'lease_until',
             'created_at', 'finished_at', 'owner', 'key', '_seq', 'worker', 'batch_id'}
local FINAL = {completed = true, failed = true, cancelled = true}

local function scope_key(owner, ttype, key)
  local o = owner and ('o' .. #owner .. ':' .. owner) or '-'
  return P .. 'k:' .. o .. '|' .. #ttype .. ':' .. ttype .. '|' .. key
end

local function read_index(id)
  local v = redis.call('HMGET', P .. 't:' .. id, unpack(IDX))
  if not v[1] then return nil end
  local r = {}
  for i, name in ipairs(IDX) do r[name] = v[i] end
  return r
end

local function member(id, r)
  return string.format('%016d', tonumber(r._seq)) .. '|' .. id
end

local function ready_key(r)
  return P .. 'q:' .. r.type .. ':' .. r.priority
end

local function count(field, by)
  local n = redis.call('HINCRBY', P .. 'n', field, by)
  if n <= 0 then redis.call('HDEL', P .. 'n', field) end
end

-- Every index but 'all', which only DELETE leaves (a task keeps its creation time).
local function unindex(id, r)
  redis.call('ZREM', P .. 's:' .. r.state, id)
  count(r.state .. ':' .. r.type, -1)
  if r.state == 'queued' then
    if redis.call('ZREM', ready_key(r), member(id, r)) == 1 then
      if redis.call('HINCRBY', P .. 'qt', r.type, -1) <= 0 then
        redis.call('HDEL', P .. 'qt', r.type)
      end
    end
    redis.call('ZREM', P .. 'delayed', id)
  elseif r.state == 'running' then
    redis.call('ZREM', P .. 'leases', id)
    redis.call('SREM', P .. 'nolease', id)
    if r.worker then redis.call('SREM', P .. 'w:' .. r.worker, id) end
  end
  if FINAL[r.state] then redis.call('ZREM', P .. 'fin', id) end
  if r.batch_id then redis.call('ZREM', P .. 'b:' .. r.batch_id, id) end
end

local function index(id, r)
  redis.call('ZADD', P .. 'all', r.created_at, id)
  redis.call('ZADD', P .. 's:' .. r.state, r.created_at, id)
  count(r.state .. ':' .. r.type, 1)
  if r.state == 'queued' then
    if r.not_before then
      redis.call('ZADD', P .. 'delayed', r.not_before, id)
    else
      redis.call('ZADD', ready_key(r), r.queued_at, member(id, r))
      redis.call('HINCRBY', P .. 'qt', r.type, 1)
    end
  elseif r.state == 'running' then
    if r.lease_until then
      redis.call('ZADD', P .. 'leases', r.lease_until, id)
    else
      redis.call('SADD', P .. 'nolease', id)
    end
    if r.worker then redis.call('SADD', P .. 'w:' .. r.worker, id) end
  end
  if FINAL[r.state] and r.finished_at then
    redis.call('ZADD', P .. 'fin', r.finished_at, id)
  end
  if r.key then redis.call('SADD', scope_key(r.owner, r.type, r.key), id) end
  if r.batch_id then redis.call('ZADD', P .. 'b:' .. r.batch_id, r._seq, id) end
end

local function log(name, body)
  return redis.call('XADD', P .. 'events', 'MAXLEN', '~', ARGV[2], '*', 'n', name, 'b', body)
end
"""

#: Writes, each on a condition. ARGV: prefix, keep, then one item each, a JSON
#: array: [id, expected state, expected worker, expected lease ('*': any, '':
#: none; a state of '' means the task must not exist), mode ('row': the fields
#: are the whole row; 'patch': set and delete these), write token ('' for none),
#: [field, value, ...] to set, [field, ...] to delete, [event name, body, ...],
#: the key of an idempotency scope that no unfinished task may hold ('':
#: none), and optionally [field, text]: the field must still hold that text]. Every value is text. An empty id logs the events only. Returns, per item, 0
#: (its condition failed: nothing written or logged) or the list of its event
#: ids, or ``{'taken', id}`` when the task `id` holds the scope. A row write keeps its token (``_w``): the same item sent again (its reply
#: was lost) finds it and succeeds without writing or logging again.
WRITE = (
    _LIBRARY
    + r"""
local function holds(have, want)
  if want == '*' then return true end
  if want == '' then return not have end
  return have == want
end

local results = {}
for i = 3, #ARGV do
  local item = cjson.decode(ARGV[i])
  local id, want_state, want_worker, want_lease, mode, token = item[1], item[2], item[3],
      item[4], item[5], item[6]
  local to_set, to_delete, events, scope = item[7], item[8], item[9], item[10]
  local ok = true
  local old = nil
  local holder = nil
  if scope ~= '' then
    for _, other in ipairs(redis.call('SMEMBERS', scope)) do
      local state = redis.call('HGET', P .. 't:' .. other, 'state')
      if other ~= id and (state == 'queued' or state == 'running' or state == 'waiting') then
        holder = other
      end
    end
  end
  if holder then
    ok = false
  elseif id ~= '' then
    local tkey = P .. 't:' .. id
    old = read_index(id)
    ok = holds(old and old.state, want_state) and holds(old and old.worker, want_worker)
        and holds(old and old.lease_until, want_lease)
    if ok and item[11] then  -- and a field still holds the text the writer read
      ok = redis.call('HGET', tkey, item[11][1]) == item[11][2]
    end
    if ok then
      local seq = old and old._seq or redis.call('INCR', P .. 'seq')
      if old then unindex(id, old) end
      if mode == 'row' then redis.call('DEL', tkey) end
      local fields = {'_seq', seq}
      if token ~= '' then fields[#fields + 1] = '_w'; fields[#fields + 1] = token end
      for k = 1, #to_set do fields[#fields + 1] = to_set[k] end
      redis.call('HSET', tkey, unpack(fields))
      if #to_delete > 0 then redis.call('HDEL', tkey, unpack(to_delete)) end
      index(id, read_index(id))
    end
  end
  if holder then
    results[#results + 1] = {'taken', holder}
  elseif not ok and token ~= '' and old and redis.call('HGET', P .. 't:' .. id, '_w') == token then
    results[#results + 1] = {}  -- written by this very item, sent before
  elseif ok then
    local ids = {}
    for k = 1, #events, 2 do ids[#ids + 1] = log(events[k], events[k + 1]) end
    results[#results + 1] = ids
  else
    results[#results + 1] = 0
  end
end
return results
"""
)

#: Claim ready tasks. ARGV: prefix, keep, worker, limit, lease end, now, aging
#: ('' for none), highest priority, lowest priority, t, t types ('' first: all
#: types), l, l type/limit pairs, a call token. Returns each claimed task's hash,
#: flattened, then the earliest not-before time of the tasks not yet due ('' for
#: none). The same call sent again (its reply was lost) claims nothing more: it
#: answers the tasks the first one claimed that this worker still holds.
ACQUIRE = (
    _LIBRARY
    + r"""
local worker, limit, until_, now = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local aging = ARGV[7] ~= '' and tonumber(ARGV[7]) or nil
local high, low = tonumber(ARGV[8]), tonumber(ARGV[9])
local i = 10
local nt = tonumber(ARGV[i]); i = i + 1
local only = nil
if nt > 0 then
  only = {}
  for k = i, i + nt - 1 do only[ARGV[k]] = true end
end
i = i + nt
local nl = tonumber(ARGV[i]); i = i + 1
local limits = {}
for k = i, i + 2 * nl - 1, 2 do limits[ARGV[k]] = tonumber(ARGV[k + 1]) end
local answered = P .. 'a:' .. ARGV[#ARGV]

local function next_due()
  local first = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
  return first[2] or ''
end

local before = redis.call('GET', answered)
if before then
  local again = {}
  for _, id in ipairs(cjson.decode(before)) do
    local tkey = P .. 't:' .. id
    local held = redis.call('HMGET', tkey, 'state', 'worker')
    if held[1] == 'running' and held[2] == worker then
      again[#again + 1] = redis.call('HGETALL', tkey)
    end
  end
  again[#again + 1] = next_due()
  return again
end

local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now)
for _, id in ipairs(due) do
  local r = read_index(id)
  redis.call('ZREM', P .. 'delayed', id)
  if r and r.state == 'queued' then
    redis.call('ZADD', ready_key(r), r.queued_at, member(id, r))
    redis.call('HINCRBY', P .. 'qt', r.type, 1)
  end
end

local room = {}
local found = {}
for _, t in ipairs(redis.call('HKEYS', P .. 'qt')) do
  if only == nil or only[t] then
    local r = limit
    if limits[t] then
      local running = tonumber(redis.call('HGET', P .. 'n', 'running:' .. t) or '0')
      r = math.min(limit, limits[t] - running)
    end
    if r > 0 then
      room[t] = r
      for p = high, low, -1 do
        local got = redis.call('ZRANGE', P .. 'q:' .. t .. ':' .. p, 0, r - 1, 'WITHSCORES')
        for k = 1, #got, 2 do
          found[#found + 1] = {m = got[k], q = tonumber(got[k + 1]), p = p, t = t}
        end
      end
    end
  end
end
if aging then
  table.sort(found, function(a, b)
    local ka, kb = a.q - a.p * aging, b.q - b.p * aging
    if ka ~= kb then return ka < kb end
    return a.m < b.m
  end)
else
  table.sort(found, function(a, b)
    if a.p ~= b.p then return a.p > b.p end
    if a.q ~= b.q then return a.q < b.q end
    return a.m < b.m
  end)
end

local claimed, ids = {}, {}
for _, c in ipairs(found) do
  if #claimed == limit then break end
  if room[c.t] > 0 then
    room[c.t] = room[c.t] - 1
    local id = string.sub(c.m, 18)
    local tkey = P .. 't:' .. id
    unindex(id, read_index(id))
    redis.call('HINCRBY', tkey, 'attempt', 1)
    redis.call('HSET', tkey, 'state', 'running', 'started_at', now, 'worker', worker,
               'lease_until', until_)
    redis.call('HDEL', tkey, 'not_before', 'waiting_for')
    index(id, read_index(id))
    claimed[#claimed + 1] = redis.call('HGETALL', tkey)
    ids[#ids + 1] = id
  end
end
if #ids > 0 then redis.call('SET', answered, cjson.encode(ids), 'EX', 60) end
claimed[#claimed + 1] = next_due()
return claimed
"""
)

#: The running tasks that may need reaping: lease ended before now (exclusive),
#: no lease at all, or held by one of the workers named. ARGV: prefix, keep, now,
#: workers... Returns their ids.
EXPIRED = (
    _LIBRARY
    + r"""
local seen, ids = {}, {}
local function add(id)
  if not seen[id] then seen[id] = true; ids[#ids + 1] = id end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', '(' .. ARGV[3])) do add(id) end
for _, id in ipairs(redis.call('SMEMBERS', P .. 'nolease')) do add(id) end
for k = 4, #ARGV do
  for _, id in ipairs(redis.call('SMEMBERS', P .. 'w:' .. ARGV[k])) do add(id) end
end
return ids
"""
)

#: Delete tasks that are final. ARGV: prefix, keep, ids... Returns how many.
DELETE = (
    _LIBRARY
    + r"""
local n = 0
for k = 3, #ARGV do
  local id = ARGV[k]
  local r = read_index(id)
  if r and FINAL[r.state] then
    unindex(id, r)
    redis.call('ZREM', P .. 'all', id)
    if r.key then redis.call('SREM', scope_key(r.owner, r.type, r.key), id) end
    redis.call('DEL', P .. 't:' .. id)
    n = n + 1
  end
end
return n
"""
)
