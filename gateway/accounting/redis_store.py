"""Usage in Redis: a capped stream of raw records plus per-day cell aggregates and per-key totals.

Key layout (every key shares the `{usage}` hash tag by default, so one script touches one slot
and the layout also works on Redis Cluster):

    <prefix>:stream          XADD MAXLEN ~ N, field `r` = the record as JSON
    <prefix>:day:<YYYY-MM-DD> hash, field `<metric>|<cell JSON>` = number, where the cell is
                             ["key", "team", "model", "provider", "user"]
    <prefix>:key:<key id>    hash, field `<bucket>|<metric>`, bucket = total | YYYY-MM | YYYY-MM-DD
    <prefix>:seen:<id>       SET NX EX: the request was already counted (id = key id + request id)

A batch is written by ONE script call (one round trip, atomic): a record whose `seen` key
already exists is skipped, so a batch retried after a lost reply, or a record submitted twice,
counts once.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from gateway.accounting.memory_store import (
    DIMENSIONS, METRICS, CellDay, Totals, UtcDays, cell_of, dedup_id,
)
from gateway.accounting.record import UsageRecord
from gateway.limits.connection import split_cluster_url
from gateway.types import dumps, dumps_lenient, loads

log = logging.getLogger(__name__)

RedisClient = aioredis.Redis | RedisCluster
SCRIPT_RECORDS = 16  # records per script call: Redis runs nothing else while a script runs

# KEYS[1] = stream, KEYS[2 .. n+1] = each record's seen key, then the day and key hashes the
# records count in, each listed once.
# ARGV[1] = seen TTL (s), ARGV[2] = stream MAXLEN (approximate), ARGV[3] = day hash TTL (s, 0 = keep)
# ARGV[4] = a JSON array of strings, 14 per record: json, cell, day, month, the 8 metrics in
# METRICS order, the KEYS index of its day hash and of its key hash. One argument for the whole
# batch and no repeated keys: the client packs ~1 argument per record instead of 15, and every
# value reaches Redis as the very string it was before.
# The counted records' increments are summed per hash field in Lua and written once per field
# (records of one chunk mostly share their cells and key buckets: ~16 calls a record become ~2);
# integer sums stay below 2^53, where doubles are exact.
# Nothing is written when the stream or a hash has another type (an error names it: the sink
# splits the batch and drops only the records that count there). An increment that still fails
# (an integer overflow) does not stop the others: the reply says so.
# Returns {records counted (not seen before), increments that failed, the first failure's text}.
WRITE_BATCH_LUA = """
local METRICS = {'requests', 'errors', 'unpriced', 'prompt_tokens', 'completion_tokens',
                 'cached_tokens', 'reasoning_tokens'}
local W = 14
local EXACT = 9007199254740991
local A = cjson.decode(ARGV[4])
local n = #A / W
local counted = 0
local ints, floats, expiring = {}, {}, {}
local want = {[KEYS[1]] = 'stream'}
for k = n + 2, #KEYS do want[KEYS[k]] = 'hash' end
for key, kind in pairs(want) do
  local t = redis.call('TYPE', key)['ok']
  if t ~= kind and t ~= 'none' then
    return redis.error_reply('WRONGTYPE usage key ' .. key .. ' holds a ' .. t .. ', not a ' .. kind)
  end
end

local failed, first = 0, ''
local function write(cmd, h, f, v)
  local r = redis.pcall(cmd, h, f, v)
  if type(r) == 'table' and r.err then
    failed = failed + 1
    if first == '' then first = h .. ' ' .. f .. ': ' .. r.err end
  end
end

local function add(h, f, v)
  local t = ints[h]
  if not t then t = {}; ints[h] = t end
  local sum = (t[f] or 0) + v
  if sum > EXACT then  -- past exact doubles: write what was summed so far, start again
    if t[f] then write('HINCRBY', h, f, string.format('%d', t[f])) end
    sum = v
  end
  t[f] = sum
end

local function addf(h, f, v)
  local t = floats[h]
  if not t then t = {}; floats[h] = t end
  t[f] = (t[f] or 0) + v
end

for j = 0, n - 1 do
  local a = W * j
  local day_hash, key_hash = KEYS[tonumber(A[a + 13])], KEYS[tonumber(A[a + 14])]
  if redis.call('SET', KEYS[2 + j], '1', 'NX', 'EX', ARGV[1]) then
    counted = counted + 1
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'r', A[a + 1])
    local cell = A[a + 2]
    local buckets = {'total', A[a + 4], A[a + 3]}
    for m = 1, 7 do
      local v = A[a + 4 + m]
      if v ~= '0' then
        v = tonumber(v)
        add(day_hash, METRICS[m] .. '|' .. cell, v)
        for b = 1, 3 do
          add(key_hash, buckets[b] .. '|' .. METRICS[m], v)
        end
      end
    end
    local cost = tonumber(A[a + 12])
    if cost ~= 0 then
      addf(day_hash, 'cost_usd|' .. cell, cost)
      for b = 1, 3 do
        addf(key_hash, buckets[b] .. '|cost_usd', cost)
      end
    end
    if ARGV[3] ~= '0' then expiring[day_hash] = true end
  end
end
for h, t in pairs(ints) do
  for f, v in pairs(t) do write('HINCRBY', h, f, string.format('%d', v)) end
end
for h, t in pairs(floats) do
  for f, v in pairs(t) do write('HINCRBYFLOAT', h, f, string.format('%.17g', v)) end
end
for h in pairs(expiring) do redis.call('EXPIRE', h, ARGV[3]) end
return {counted, failed, first}
"""


def redis_client(url: str) -> RedisClient:
    """A client for `url` (the forms of `state.redis_url`: `?cluster=1` or a `+cluster` scheme
    select Redis Cluster). The client does not retry on its own: the usage sink retries with
    backoff."""
    plain, cluster = split_cluster_url(url)
    opts: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0}
    if cluster:
        return RedisCluster.from_url(plain, **opts)
    return aioredis.from_url(plain, retry=Retry(NoBackoff(), 0), **opts)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _metric_values(r: UsageRecord) -> list[str]:
    """The 8 metrics of one record in METRICS order, as the script adds them."""
    return ["1", "1" if r.status >= 400 else "0", "0" if r.priced else "1",
            str(int(r.prompt_tokens)), str(int(r.completion_tokens)), str(int(r.cached_tokens)),
            str(int(r.reasoning_tokens)), repr(float(r.cost_usd))]


class RedisUsageStore:
    """The usage store on Redis. `redis` is a URL or an existing `redis.asyncio` client (then the
    caller keeps ownership and closes it)."""

    def __init__(
        self,
        redis: str | RedisClient,
        *,
        prefix: str = "modelyard:{usage}",
        stream_maxlen: int = 100_000,
        dedup_ttl_s: int = 3_600,
        retention_days: int | None = None,
        fast: Any = None,
    ) -> None:
        """`fast`: a `gateway.limits.fastredis.FastRedis` (standalone redis:// only) that runs
        the batch script over its own pipelined connection, without redis-py's per-call cost."""
        self._owned = isinstance(redis, str)
        self.fast = fast
        self.redis: RedisClient = redis_client(redis) if isinstance(redis, str) else redis
        self.prefix = prefix
        self.stream_maxlen = stream_maxlen
        self.dedup_ttl_s = dedup_ttl_s
        self.retention_s = int(retention_days * 86_400) if retention_days else 0
        self._script = self.redis.register_script(WRITE_BATCH_LUA)
        self._day = UtcDays()

    @property
    def stream_key(self) -> str:
        return f"{self.prefix}:stream"

    def day_key(self, day: str) -> str:
        return f"{self.prefix}:day:{day}"

    def key_key(self, key_id: str) -> str:
        return f"{self.prefix}:key:{key_id}"

    async def write_batch(self, records: Sequence[UsageRecord]) -> int:
        """One script call per `SCRIPT_RECORDS` records, one after the other: a Lua script holds
        the whole Redis server, so a 50 ms batch in one call (~2 ms of Redis time at 1,300
        requests/s) would stall every limit check behind it, the latency tail. A chunk that
        fails after others were written is safe to retry: records are counted once (seen keys)."""
        counted = 0
        for at in range(0, len(records), SCRIPT_RECORDS):
            counted += await self._write_chunk(records[at:at + SCRIPT_RECORDS])
        return counted

    async def _write_chunk(self, records: Sequence[UsageRecord]) -> int:
        if not records:
            return 0
        seen = f"{self.prefix}:seen:"
        keys: list[str] = [self.stream_key] + [seen + dedup_id(r) for r in records]
        hashes: dict[str, str] = {}  # hash key -> its KEYS index (1-based, as Lua counts)

        def index(name: str) -> str:
            at = hashes.get(name)
            if at is None:
                keys.append(name)
                at = hashes[name] = str(len(keys))
            return at

        values: list[str] = []
        for r in records:
            day = self._day(r.ts)
            values += (dumps_lenient(r).decode(), dumps_lenient(cell_of(r)).decode(), day, day[:7])
            values += _metric_values(r)
            values += (index(self.day_key(day)), index(self.key_key(r.key_id)))
        args: list[Any] = [self.dedup_ttl_s, self.stream_maxlen, self.retention_s, dumps(values)]
        if self.fast is None:
            counted = await self._script(keys=keys, args=args)
        else:
            try:
                counted = await self.fast.evalsha(self._script.sha, keys, args)
            except NoScriptError:  # a flushed or restarted server: redis-py loads it again
                counted = await self._script(keys=keys, args=args)
        return self._counted(counted)

    def _counted(self, reply: Any) -> int:
        """The script's reply: records counted, increments that failed, the first failure."""
        counted, failed, first = int(reply[0]), int(reply[1]), _text(reply[2])
        if failed:  # the records are counted (stream, seen keys) but not all their sums are
            log.error("usage: %d usage increments could not be written to Redis (first: %s); "
                      "the totals of those fields are short", failed, first[:300])
        return counted

    async def cells(self, days: Sequence[str]) -> list[CellDay]:
        if not days:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(self.day_key(day))
        results = await pipe.execute()
        out: list[CellDay] = []
        for day, raw in zip(days, results):
            by_cell: dict[str, dict[str, str]] = {}
            for field, value in (raw or {}).items():
                metric, _, cell = _text(field).partition("|")
                by_cell.setdefault(cell, {})[metric] = _text(value)
            for cell, values in by_cell.items():
                dims = tuple(str(x) for x in loads(cell))
                if len(dims) != len(DIMENSIONS):
                    log.warning("usage: skipping malformed cell in %s", self.day_key(day))
                    continue
                out.append(CellDay(day, dims, Totals.from_fields(values)))  # type: ignore[arg-type]
        return out

    async def key_totals(self, key_id: str, bucket: str) -> Totals:
        names = [f"{bucket}|{m}" for m in METRICS]
        values = await self.redis.hmget(self.key_key(key_id), names)
        return Totals.from_fields({m: None if v is None else _text(v) for m, v in zip(METRICS, values)})

    async def recent(self, count: int) -> list[UsageRecord]:
        entries = await self.redis.xrevrange(self.stream_key, count=count)
        out: list[UsageRecord] = []
        for _id, data in entries or ():
            raw = (data or {}).get(b"r", (data or {}).get("r"))
            if raw is not None:
                out.append(UsageRecord.from_dict(loads(raw)))
        return out

    async def close(self) -> None:
        if self.fast is not None:
            await self.fast.close()
        if self._owned:
            await self.redis.aclose()
