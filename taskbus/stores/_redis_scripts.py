"""The Redis store's Lua scripts: every change is one of them, so it is one atomic
step on the server, its events logged in the same step.

Keys (``P`` is the store's prefix, ``"taskbus:"`` by default):

- ``P t:<id>``: a task, a hash of its non-null columns (and ``_seq``, its
  insertion number, which breaks ties in the queue as SQLite's rowid does);
- ``P all``, ``P s:<state>``: ids by creation time (all, and by state);
- ``P fin``: final tasks by finish time (purging);
- ``P n``: counts, ``<state>:<type>`` -> tasks (stats, per-type limits);
- ``P nq``: queued tasks by priority, ``<priority>:<type>`` -> tasks (stats),
  and ``_all`` once it counts every queued task (`_redis_counts` recounts it
  when that is missing: a store written by a taskbus that did not keep it);
- ``P q:<type>:<priority>``: ready queued tasks by queued_at, members
  ``<seq, 16 digits>|<id>`` (FIFO, then insertion); ``P qt``: type -> ready
  count; ``P delayed``: queued tasks with a not-before time, by it (moved into
  the ready sets by `acquire` once due);
- ``P leases``: running tasks by lease end; ``P nolease``: running tasks with
  none; ``P w:<worker>``: the running tasks a worker holds;
- ``P k:<scope>``: the ids submitted with one idempotency key scope;
- ``P b:<batch>``: the tasks of one batch by insertion (``_seq``);
- ``P c:<id>``: the children waiting for task ``id`` (dependencies: a child
  holds its parents' ids in its metadata, ``after``, and, while one of them is
  unfinished, the not-before time ``AWAITING_PARENTS``, which no claim reaches;
  `WRITE` releases it in the step that makes its last parent final);
- ``P events``: the event log, a stream (``MAXLEN ~ keep``); the entry id is the
  event id, fields ``n`` (name) and ``b`` (JSON body).

Every script takes the prefix as ``ARGV[1]``; numbers it writes come from the
caller as text (Lua would round a float it formatted itself).
"""

from __future__ import annotations

from .._record import AWAITING_PARENTS

__all__ = [
    "ACQUIRE",
    "DELETE",
    "EXPIRED",
    "SCHEDULE_FIRE",
    "SCHEDULE_PAUSE",
    "SCHEDULE_PUT",
    "SCHEDULE_REMOVE",
    "WRITE",
]

_LIBRARY = (
    r"""
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

local function count(field, by, key)
  key = key or (P .. 'n')
  local n = redis.call('HINCRBY', key, field, by)
  if n <= 0 then redis.call('HDEL', key, field) end
end

-- Every index but 'all', which only DELETE leaves (a task keeps its creation time).
local function unindex(id, r)
  redis.call('ZREM', P .. 's:' .. r.state, id)
  count(r.state .. ':' .. r.type, -1)
  if r.state == 'queued' then
    count(r.priority .. ':' .. r.type, -1, P .. 'nq')
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
    count(r.priority .. ':' .. r.type, 1, P .. 'nq')
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

-- Dependencies: whether none of a waiting child's parents is unfinished (a parent
-- gone, purged, counts as finished); release a waiting child whose parents are.
local WAITING = """
    + repr(AWAITING_PARENTS)
    + r"""

local function parents_of(child)
  local meta = redis.call('HGET', P .. 't:' .. child, 'metadata')
  if not meta then return {} end
  local ok, decoded = pcall(cjson.decode, meta)
  if not ok or type(decoded) ~= 'table' or type(decoded.after) ~= 'table' then return {} end
  return decoded.after
end

local function release_child(child)
  local r = read_index(child)
  if not (r and r.state == 'queued' and tonumber(r.not_before) == WAITING) then return end
  for _, parent in ipairs(parents_of(child)) do
    local state = redis.call('HGET', P .. 't:' .. tostring(parent), 'state')
    if state and not FINAL[state] then return end
  end
  unindex(child, r)
  redis.call('HDEL', P .. 't:' .. child, 'not_before', 'waiting_for')
  index(child, read_index(child))
end

-- After a write of task `id` (`old`, `new`: its index fields before, nil if new,
-- and after): a new waiting child joins its parents' sets (and is released at once
-- if they have all ended); a task that becomes final releases its waiting children.
local function settle_children(id, old, new)
  if not old and new.state == 'queued' and tonumber(new.not_before) == WAITING then
    for _, parent in ipairs(parents_of(id)) do
      redis.call('SADD', P .. 'c:' .. tostring(parent), id)
    end
    release_child(id)
  elseif old and FINAL[new.state] and not FINAL[old.state] then
    local children = redis.call('SMEMBERS', P .. 'c:' .. id)
    if #children > 0 then
      for _, child in ipairs(children) do release_child(child) end
      redis.call('DEL', P .. 'c:' .. id)
    end
  end
end

local function log(name, body)
  return redis.call('XADD', P .. 'events', 'MAXLEN', '~', ARGV[2], '*', 'n', name, 'b', body)
end
"""
)

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
      local new = read_index(id)
      index(id, new)
      settle_children(id, old, new)
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
#: types), l, l type/limit pairs, c, c type/per-key limit pairs (a task's key is
#: ``concurrency_key`` in its metadata JSON), a call token. Returns each claimed task's hash,
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
i = i + 2 * nl
local nc = tonumber(ARGV[i]); i = i + 1
local klimits = {}
for k = i, i + 2 * nc - 1, 2 do klimits[ARGV[k]] = tonumber(ARGV[k + 1]) end
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

-- Per-key concurrency: running tasks by type .. '\31' .. key, for the types limited so.
local function ckey(t, id)
  local m = redis.call('HGET', P .. 't:' .. id, 'metadata')
  if not m then return nil end
  local ok, d = pcall(cjson.decode, m)
  if ok and type(d) == 'table' and type(d.concurrency_key) == 'string' then
    return t .. '\31' .. d.concurrency_key
  end
  return nil
end
local krun = {}
if nc > 0 then
  for _, id in ipairs(redis.call('ZRANGE', P .. 's:running', 0, -1)) do
    local t = redis.call('HGET', P .. 't:' .. id, 'type')
    if t and klimits[t] then
      local pk = ckey(t, id)
      if pk then krun[pk] = (krun[pk] or 0) + 1 end
    end
  end
end

local room = {}
local found = {}
-- Up to r ready tasks of type t at priority p whose key has room, skipping (not
-- waiting for) those whose key is full: other keys behind them still run.
local function collect_keyed(t, p, r)
  local zkey, start, n, tent = P .. 'q:' .. t .. ':' .. p, 0, 0, {}
  while n < r do
    local got = redis.call('ZRANGE', zkey, start, start + 99, 'WITHSCORES')
    if #got == 0 then return end
    for k = 1, #got, 2 do
      if n >= r then return end
      local id = string.sub(got[k], 18)
      local pk = ckey(t, id)
      if not pk or (krun[pk] or 0) + (tent[pk] or 0) < klimits[t] then
        if pk then tent[pk] = (tent[pk] or 0) + 1 end
        found[#found + 1] = {m = got[k], q = tonumber(got[k + 1]), p = p, t = t, k = pk}
        n = n + 1
      else  -- its key is full: say so (as `_task_keys.key_reason` words it)
        local why = 'concurrency ' .. klimits[t] .. " per key '" .. string.sub(pk, #t + 2) .. "'"
        if redis.call('HGET', P .. 't:' .. id, 'waiting_for') ~= why then
          redis.call('HSET', P .. 't:' .. id, 'waiting_for', why)
        end
      end
    end
    start = start + 100
  end
end
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
        if klimits[t] then
          collect_keyed(t, p, r)
        else
          local got = redis.call('ZRANGE', P .. 'q:' .. t .. ':' .. p, 0, r - 1, 'WITHSCORES')
          for k = 1, #got, 2 do
            found[#found + 1] = {m = got[k], q = tonumber(got[k + 1]), p = p, t = t}
          end
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
  if room[c.t] > 0 and (not c.k or (krun[c.k] or 0) < klimits[c.t]) then
    room[c.t] = room[c.t] - 1
    if c.k then krun[c.k] = (krun[c.k] or 0) + 1 end
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
    redis.call('DEL', P .. 'c:' .. id)
    n = n + 1
  end
end
return n
"""
)

# Schedules: ``P sch:<id>``, a hash (spec: the definition as JSON, timing, owner,
# paused '0'/'1', next, last, last_task, created; '' for none); ``P sch``: every
# schedule id (score 0, so by id); ``P sch:due``: ids of schedules not paused by
# next fire time.
_SCHEDULES = r"""
local function schedule_indexed(id)
  local key = P .. 'sch:' .. id
  local s = redis.call('HMGET', key, 'paused', 'next')
  if s[1] == '0' and s[2] and s[2] ~= '' then
    redis.call('ZADD', P .. 'sch:due', s[2], id)
  else
    redis.call('ZREM', P .. 'sch:due', id)
  end
  return redis.call('HGETALL', key)
end
"""

#: Add or replace a schedule, keeping the state of one with the same timing. ARGV:
#: prefix, keep, id, spec, timing, owner, paused, next, last, last task, created,
#: keep paused ('1'/'0'). Returns the stored hash, flattened.
SCHEDULE_PUT = (
    _LIBRARY
    + _SCHEDULES
    + r"""
local id = ARGV[3]
local key = P .. 'sch:' .. id
local old = redis.call('HMGET', key, 'timing', 'next', 'last', 'last_task', 'created', 'paused')
local paused, next_, last, last_task, created = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
if old[1] and old[1] == ARGV[5] then
  next_, last, last_task, created = old[2], old[3], old[4], old[5]
  if ARGV[12] == '1' then paused = old[6] end
end
redis.call('DEL', key)
redis.call('HSET', key, 'spec', ARGV[4], 'timing', ARGV[5], 'owner', ARGV[6], 'paused', paused,
           'next', next_, 'last', last, 'last_task', last_task, 'created', created)
redis.call('ZADD', P .. 'sch', 0, id)
return schedule_indexed(id)
"""
)

#: Pause or resume a schedule. ARGV: prefix, keep, id, paused ('1'/'0'), next fire
#: time ('': kept). Returns the stored hash, flattened, or 0 if there is none.
SCHEDULE_PAUSE = (
    _LIBRARY
    + _SCHEDULES
    + r"""
local key = P .. 'sch:' .. ARGV[3]
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('HSET', key, 'paused', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', key, 'next', ARGV[5]) end
return schedule_indexed(ARGV[3])
"""
)

#: Remove a schedule. ARGV: prefix, keep, id. Returns 1, or 0 if there was none.
SCHEDULE_REMOVE = (
    _LIBRARY
    + r"""
redis.call('ZREM', P .. 'sch', ARGV[3])
redis.call('ZREM', P .. 'sch:due', ARGV[3])
return redis.call('DEL', P .. 'sch:' .. ARGV[3])
"""
)

#: Fire a due schedule: if it is not paused and its next fire time is the one
#: given, move that on and add the fire's task with its events, in this one step.
#: ARGV: prefix, keep, id, due, next, fired for ('': no task), task id (''), the
#: task as a `WRITE` item ('': none). Returns 0 (not due: nothing written) or the
#: ids of the events logged ({} when the same call was sent before: its reply was
#: lost, and the task is stored).
SCHEDULE_FIRE = (
    _LIBRARY
    + r"""
local key = P .. 'sch:' .. ARGV[3]
local s = redis.call('HMGET', key, 'paused', 'next')
local due = s[1] == '0' and s[2] and s[2] ~= ''
    and math.abs(tonumber(s[2]) - tonumber(ARGV[4])) <= 1e-6
if not due then
  if ARGV[7] ~= '' and redis.call('EXISTS', P .. 't:' .. ARGV[7]) == 1 then return {} end
  return 0
end
redis.call('HSET', key, 'next', ARGV[5])
redis.call('ZADD', P .. 'sch:due', ARGV[5], ARGV[3])
if ARGV[8] == '' then return {} end
redis.call('HSET', key, 'last', ARGV[6], 'last_task', ARGV[7])
local item = cjson.decode(ARGV[8])
local id, written_by, to_set, events = item[1], item[6], item[7], item[9]
local fields = {'_seq', redis.call('INCR', P .. 'seq')}
if written_by ~= '' then fields[#fields + 1] = '_w'; fields[#fields + 1] = written_by end
for k = 1, #to_set do fields[#fields + 1] = to_set[k] end
redis.call('HSET', P .. 't:' .. id, unpack(fields))
index(id, read_index(id))
local ids = {}
for k = 1, #events, 2 do ids[#ids + 1] = log(events[k], events[k + 1]) end
return ids
"""
)
