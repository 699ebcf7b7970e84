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
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.accounting.memory_store import (
    DIMENSIONS, METRICS, CellDay, Totals, cell_of, day_of, dedup_id, key_buckets,
)
from gateway.accounting.record import UsageRecord
from gateway.types import dumps, loads

log = logging.getLogger(__name__)

RedisClient = aioredis.Redis | RedisCluster

# KEYS[1] = stream; then per record: seen key, day hash, key hash.
# ARGV[1] = seen TTL (s), ARGV[2] = stream MAXLEN (approximate), ARGV[3] = day hash TTL (s, 0 = keep)
# then 12 per record: json, cell, day, month, then the 8 metrics in METRICS order.
# Returns the number of records counted (not seen before).
WRITE_BATCH_LUA = """
local METRICS = {'requests', 'errors', 'unpriced', 'prompt_tokens', 'completion_tokens',
                 'cached_tokens', 'reasoning_tokens'}
local W = 12
local n = (#KEYS - 1) / 3
local counted = 0
for j = 0, n - 1 do
  local k = 1 + 3 * j
  local a = 3 + W * j
  if redis.call('SET', KEYS[k + 1], '1', 'NX', 'EX', ARGV[1]) then
    counted = counted + 1
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'r', ARGV[a + 1])
    local cell = ARGV[a + 2]
    local buckets = {'total', ARGV[a + 4], ARGV[a + 3]}
    for m = 1, 7 do
      local v = ARGV[a + 4 + m]
      if v ~= '0' then
        redis.call('HINCRBY', KEYS[k + 2], METRICS[m] .. '|' .. cell, v)
        for b = 1, 3 do
          redis.call('HINCRBY', KEYS[k + 3], buckets[b] .. '|' .. METRICS[m], v)
        end
      end
    end
    local cost = ARGV[a + 12]
    if tonumber(cost) ~= 0 then
      redis.call('HINCRBYFLOAT', KEYS[k + 2], 'cost_usd|' .. cell, cost)
      for b = 1, 3 do
        redis.call('HINCRBYFLOAT', KEYS[k + 3], buckets[b] .. '|cost_usd', cost)
      end
    end
    if ARGV[3] ~= '0' then
      redis.call('EXPIRE', KEYS[k + 2], ARGV[3])
    end
  end
end
return counted
"""


def redis_client(url: str) -> RedisClient:
    """A client for `url`; `?cluster=1` selects Redis Cluster. The client does not retry on its
    own: the usage sink retries with backoff."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    cluster = any(k == "cluster" and v not in ("", "0", "false") for k, v in query)
    clean = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "cluster"])))
    opts: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0}
    if cluster:
        return RedisCluster.from_url(clean, **opts)
    return aioredis.from_url(clean, retry=Retry(NoBackoff(), 0), **opts)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _metric_values(r: UsageRecord) -> list[str]:
    t = Totals.of_record(r)
    return [str(int(getattr(t, name))) for name in METRICS[:-1]] + [repr(float(t.cost_usd))]


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
    ) -> None:
        self._owned = isinstance(redis, str)
        self.redis: RedisClient = redis_client(redis) if isinstance(redis, str) else redis
        self.prefix = prefix
        self.stream_maxlen = stream_maxlen
        self.dedup_ttl_s = dedup_ttl_s
        self.retention_s = int(retention_days * 86_400) if retention_days else 0
        self._script = self.redis.register_script(WRITE_BATCH_LUA)

    @property
    def stream_key(self) -> str:
        return f"{self.prefix}:stream"

    def day_key(self, day: str) -> str:
        return f"{self.prefix}:day:{day}"

    def key_key(self, key_id: str) -> str:
        return f"{self.prefix}:key:{key_id}"

    async def write_batch(self, records: Sequence[UsageRecord]) -> int:
        if not records:
            return 0
        keys: list[str] = [self.stream_key]
        args: list[Any] = [self.dedup_ttl_s, self.stream_maxlen, self.retention_s]
        for r in records:
            day = day_of(r.ts)
            keys += [f"{self.prefix}:seen:{dedup_id(r)}", self.day_key(day), self.key_key(r.key_id)]
            args += [dumps(r.to_dict()), dumps(list(cell_of(r))), day, day[:7], *_metric_values(r)]
        counted = await self._script(keys=keys, args=args)
        return int(counted)

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
        for _id, data in entries:
            raw = data.get(b"r", data.get("r"))
            if raw is not None:
                out.append(UsageRecord.from_dict(loads(raw)))
        return out

    async def close(self) -> None:
        if self._owned:
            await self.redis.aclose()
