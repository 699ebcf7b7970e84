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
# ARGV[4] = a JSON array: the chunk's distinct cells (JSON text each) as one array, then 12
# values per record: its cell's index in that array, its day, the 7 METRICS and the cost
# (numbers), the KEYS index of its day hash and of its key hash.
# ARGV[5 .. n+4] = each record's JSON, as is (not escaped into another JSON text).
# The counted records' increments are summed per hash field in Lua and written once per field
# (records of one chunk mostly share their cells and key buckets: ~16 calls a record become ~2);
# field names are made once per cell and per day, not once per record; integer sums stay below
# 2^53, where doubles are exact.
# Nothing is written when the stream or a hash has another type (an error names it: the sink
# splits the batch and drops only the records that count there). An increment that still fails
# (an integer overflow) does not stop the others: the reply says so.
# Returns {records counted (not seen before), increments that failed, the first failure's text}.
WRITE_BATCH_LUA = """
local METRICS = {'requests', 'errors', 'unpriced', 'prompt_tokens', 'completion_tokens',
                 'cached_tokens', 'reasoning_tokens', 'cost_usd'}
local W = 12
local EXACT = 9007199254740991
local A = cjson.decode(ARGV[4])
local CELLS = A[1]
local n = (#A - 1) / W
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

local function fields(name, cell)  -- the 8 field names of a cell or of a key bucket
  local f = {}
  for m = 1, 8 do
    if cell then f[m] = METRICS[m] .. '|' .. name else f[m] = name .. '|' .. METRICS[m] end
  end
  return f
end
local TOTAL = fields('total', false)

-- the chunk's counted records are summed per (day hash, key hash, cell) first: plain
-- additions per record; field names and field sums once per combination
local combos, order, cell_fields, day_fields = {}, {}, {}, {}
local function spill(c, m)  -- move a combination's sum of metric m into its fields' sums
  local v = c[2 + m]
  if v == 0 then return end
  local put = add
  if m == 8 then put = addf end
  put(c[1], c[11][m], v)
  put(c[2], TOTAL[m], v)
  put(c[2], c[12][m], v)
  put(c[2], c[13][m], v)
  c[2 + m] = 0
end

for j = 0, n - 1 do
  local a = 1 + W * j
  if redis.call('SET', KEYS[2 + j], '1', 'NX', 'EX', ARGV[1]) then
    counted = counted + 1
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'r', ARGV[5 + j])
    local dh, kh, ci = A[a + 11], A[a + 12], A[a + 1]
    local id = (dh * 1024 + kh) * 1024 + ci  -- unique: a chunk has under 1024 keys and cells
    local c = combos[id]
    if not c then
      local day = A[a + 2]
      local cf = cell_fields[ci]
      if not cf then
        cf = fields(CELLS[ci], true)
        cell_fields[ci] = cf
      end
      local df = day_fields[day]
      if not df then
        df = {fields(string.sub(day, 1, 7), false), fields(day, false)}
        day_fields[day] = df
      end
      -- day hash, key hash, the 8 sums, the cell's, month's and day's field names
      c = {KEYS[dh], KEYS[kh], 0, 0, 0, 0, 0, 0, 0, 0, cf, df[1], df[2]}
      combos[id] = c
      order[#order + 1] = c
      if ARGV[3] ~= '0' then expiring[KEYS[dh]] = true end
    end
    for m = 1, 8 do
      local v = A[a + 2 + m]
      if v ~= 0 then
        if m < 8 and c[2 + m] + v > EXACT then spill(c, m) end
        c[2 + m] = c[2 + m] + v
      end
    end
  end
end
for _, c in ipairs(order) do
  for m = 1, 8 do spill(c, m) end
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


def _metric_values(r: UsageRecord) -> tuple[int, int, int, int, int, int, int, float]:
    """The 8 metrics of one record in METRICS order, as the script adds them."""
    return (1, 1 if r.status >= 400 else 0, 0 if r.priced else 1, int(r.prompt_tokens),
            int(r.completion_tokens), int(r.cached_tokens), int(r.reasoning_tokens),
            float(r.cost_usd))


_CELLS_MAX = 4096  # cells whose JSON text is remembered


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
        self._cells: dict[tuple[str, ...], str] = {}

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
        hashes: dict[str, int] = {}  # hash key -> its KEYS index (1-based, as Lua counts)
        cells: dict[str, int] = {}  # cell JSON -> its index in the chunk's cells (1-based)

        def index(name: str) -> int:
            at = hashes.get(name)
            if at is None:
                keys.append(name)
                at = hashes[name] = len(keys)
            return at

        values: list[Any] = []  # 12 a record; the chunk's cells go in front of them
        jsons: list[bytes] = []
        for r in records:
            day = self._day(r.ts)
            cell = self._cell_json(r)
            ci = cells.get(cell)
            if ci is None:
                ci = cells[cell] = len(cells) + 1
            values += (ci, day, *_metric_values(r),
                       index(self.day_key(day)), index(self.key_key(r.key_id)))
            jsons.append(dumps_lenient(r))
        args: list[Any] = [self.dedup_ttl_s, self.stream_maxlen, self.retention_s,
                           dumps([list(cells), *values]), *jsons]
        if self.fast is None:
            counted = await self._script(keys=keys, args=args)
        else:
            try:
                counted = await self.fast.evalsha(self._script.sha, keys, args)
            except NoScriptError:  # a flushed or restarted server: redis-py loads it again
                counted = await self._script(keys=keys, args=args)
        return self._counted(counted)

    def _cell_json(self, r: UsageRecord) -> str:
        """The JSON text of the record's cell (the same cells recur: remembered)."""
        cell = cell_of(r)
        text = self._cells.get(cell)
        if text is None:
            if len(self._cells) >= _CELLS_MAX:
                self._cells.clear()
            text = self._cells[cell] = dumps_lenient(cell).decode()
        return text

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
