"""The Redis store's counts (`RedisStore.stats`): one script reads ``P n`` and ``P nq``
in one atomic step, first recounting ``P nq`` when it does not count every queued
task yet.

Every script that queues or unqueues a task keeps ``P nq`` (see `_redis_scripts`),
so a read is one round trip over two small hashes. A store written by a taskbus
that did not keep it has tasks queued that ``P nq`` does not know: its marker
``_all`` is missing, so the first read counts the queued tasks from ``P s:queued``
(one step, O(queued tasks), once per store) and sets the marker. Processes of
such a taskbus still writing to the store (a rolling upgrade) keep ``P n`` but not
``P nq``: a read that finds the two disagreeing on a type's queued count recounts
too, so the figure is right again as soon as the older processes are gone.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .._states import TaskState
from ._base import StoreStats

__all__ = ["COUNTS", "stats_from"]

#: ARGV: prefix. Returns {``P n`` as field, value, ...; ``P nq`` likewise}.
COUNTS = r"""
local P = ARGV[1]
local counts = redis.call('HGETALL', P .. 'n')
local by_priority = redis.call('HGETALL', P .. 'nq')

local function agree()
  if redis.call('HEXISTS', P .. 'nq', '_all') == 0 then return false end
  local want = {}
  for k = 1, #counts, 2 do
    local t = string.match(counts[k], '^queued:(.*)$')
    if t then want[t] = tonumber(counts[k + 1]) end
  end
  for k = 1, #by_priority, 2 do
    local t = string.match(by_priority[k], '^%d+:(.*)$')
    if t then want[t] = (want[t] or 0) - tonumber(by_priority[k + 1]) end
  end
  for _, left in pairs(want) do
    if left ~= 0 then return false end
  end
  return true
end

if not agree() then
  local tally = {}
  for _, id in ipairs(redis.call('ZRANGE', P .. 's:queued', 0, -1)) do
    local v = redis.call('HMGET', P .. 't:' .. id, 'state', 'type', 'priority')
    if v[1] == 'queued' and v[2] and v[3] then
      local field = v[3] .. ':' .. v[2]
      tally[field] = (tally[field] or 0) + 1
    end
  end
  redis.call('DEL', P .. 'nq')
  local fields = {'_all', '1'}
  for field, n in pairs(tally) do
    fields[#fields + 1] = field
    fields[#fields + 1] = n
  end
  redis.call('HSET', P .. 'nq', unpack(fields))
  by_priority = redis.call('HGETALL', P .. 'nq')
end
return {counts, by_priority}
"""


def stats_from(answer: Any) -> StoreStats:
    """The `StoreStats` of what `COUNTS` returned."""
    counts, by_priority = answer
    by_state: Counter[TaskState] = Counter()
    by_type: dict[str, Counter[TaskState]] = {}
    for field, value in _pairs(counts):
        state_name, _, task_type = field.partition(":")
        state, number = TaskState(state_name), int(value)
        if number > 0:
            by_state[state] += number
            by_type.setdefault(task_type, Counter())[state] += number
    queued: dict[str, dict[int, int]] = {}
    for field, value in _pairs(by_priority):
        priority, _, task_type = field.partition(":")
        number = int(value)
        if priority.isdigit() and number > 0:  # not the marker ``_all``
            queued.setdefault(task_type, {})[int(priority)] = number
    return StoreStats(
        by_state=dict(by_state),
        by_type={k: dict(v) for k, v in by_type.items()},
        queued_by_priority=queued,
    )


def _pairs(flat: list[str]) -> zip[tuple[str, str]]:
    return zip(flat[::2], flat[1::2], strict=True)
