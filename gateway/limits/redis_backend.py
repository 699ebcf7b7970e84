"""Redis state backend: the algorithm of `spec` in Lua, one EVALSHA per slot group.

The slot groups (keys with their Cluster hash tags, the scripts' numbers, the packed EVALSHA)
are planned in `gateway.limits.redis_plan`. A key's names never depend on what else the
request carries (a key moved to another team keeps its counters), at the price of one more
concurrent call on a cluster.

On a standalone Redis all scopes go into ONE script call whatever their tags. On a cluster
each group is one script call, all sent concurrently (one round trip of wall time); if one
group refuses, the groups that accepted are given back before the refusal is returned.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Sequence

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from gateway.limits.background import BackgroundTasks
from gateway.limits.connection import RedisClient, connect
from gateway.limits.fastredis import FastRedis, fast_target
from gateway.limits.redis_plan import Group, Planner, Settle, merge_settles, num_arg
from gateway.limits.scripts import ScriptSources
from gateway.limits.spec import (
    Decision, LimitCheck, QuotaCheck, QuotaUsage, Reservation, Window, active_limits,
    quota_slot, tighter,
)

Clock = Callable[[], float]


SETTLE_TIMEOUT_S = 2.0  # a queued reconcile batch waits at most this long for Redis


class RedisBackend:
    """`StateBackend` on Redis. `clock` (unix seconds) overrides the server's TIME: tests only."""

    name = "redis"

    def __init__(self, client: RedisClient, *, cluster: bool = False, prefix: str = "my",
                 clock: Clock | None = None, fast: FastRedis | None = None) -> None:
        self.client = client
        self.fast = fast  # lean pipelined EVALSHA for acquire (standalone redis:// only)
        self.cluster = cluster
        self.prefix = prefix
        self._clock = clock
        src = ScriptSources.load()
        self._acquire = client.register_script(src.acquire)
        self._reconcile = client.register_script(src.reconcile)
        self._cooldown = client.register_script(src.cooldown)
        self._bg = BackgroundTasks()
        self._queue: list[Settle] = []
        self._flushing = False
        self._pool_reset = False
        planner = Planner(prefix, cluster, self._acquire.sha if fast and clock is None else "")
        self._groups = planner.groups  # a set of checks' slot groups, remembered
        self._plan = planner.plan  # the same, built afresh

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "my", clock: Clock | None = None,
                 socket_timeout_s: float = 2.0) -> "RedisBackend":
        client, cluster = connect(url, socket_timeout_s=socket_timeout_s)
        target = None if cluster else fast_target(url)
        fast = None if target is None else FastRedis(
            target, connect_timeout_s=socket_timeout_s, reply_timeout_s=socket_timeout_s)
        return cls(client, cluster=cluster, prefix=prefix, clock=clock, fast=fast)

    async def start(self) -> None:
        """Check the connection and load the scripts (EVALSHA falls back to EVAL otherwise)."""
        await self.client.ping()
        for script in (self._acquire, self._reconcile, self._cooldown):
            await self.client.script_load(script.script)

    async def close(self) -> None:
        await self._bg.drain()
        if self.fast is not None:
            await self.fast.close()
        await self.client.aclose()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    # ------------------------------------------------------------------ planning

    def _now_arg(self) -> str:
        return "" if self._clock is None else repr(self._clock() * 1000.0)

    def _wall(self) -> float:
        return self._clock() if self._clock is not None else time.time()

    # ------------------------------------------------------------------ acquire

    async def _run_acquire(self, g: Group, now: str, est: int, timeout_s: float = 0.0,
                           ) -> list[int]:
        args = [now, g.nums(est)]
        if self.fast is None:
            return list(await self._bounded(self._acquire(keys=g.keys, args=args), timeout_s))
        try:
            return list(await self.fast.evalsha(self._acquire.sha, g.keys, args, timeout_s))
        except (NoScriptError, RedisConnectionError) as err:
            return await self._fast_failed(err, g.keys, args, timeout_s)

    @staticmethod
    async def _bounded(call: Awaitable[Any], timeout_s: float) -> Any:
        if not timeout_s:
            return await call
        async with asyncio.timeout(timeout_s):
            return await call

    async def _fast_failed(self, err: Exception, keys: list[str], args: list[str],
                           timeout_s: float) -> list[int]:
        """After the pipelined connection failed a call: NOSCRIPT runs it through redis-py's
        Script (which loads it, once); a lost connection is raised."""
        if isinstance(err, NoScriptError):
            return list(await self._bounded(self._acquire(keys=keys, args=args), timeout_s))
        # the server went away: redis-py's idle pooled connections are dead too; drop them
        # so its next command (the failover probe) reconnects instead of failing once
        if not self._pool_reset:
            self._pool_reset = True
            try:
                await self.client.connection_pool.disconnect(  # type: ignore[union-attr]
                    inuse_connections=False)  # the fast path is never a cluster client
            except (RedisError, OSError):
                pass  # closing dead sockets: nothing to do about a failure here
            finally:
                self._pool_reset = False
        raise err

    @property
    def bounds_itself(self) -> bool:
        """`acquire(..., timeout_s=)` bounds the whole call (the pipelined connection's
        watchdog), so callers need no `asyncio.timeout` of their own."""
        return self.fast is not None

    async def acquire(
        self, checks: Sequence[LimitCheck], estimate_tokens: int,
        quotas: Sequence[QuotaCheck] = (), timeout_s: float = 0.0,
    ) -> Decision:
        """Reserve across every scope at once. With the pipelined connection, `timeout_s`
        (0: unbounded) bounds the call and raises `TimeoutError` when it runs out."""
        limits = active_limits(checks)
        est = max(0, int(estimate_tokens))
        slots = tuple(quota_slot(q, self._wall()) for q in quotas) if quotas else ()
        groups = self._groups(limits, slots)
        replies: list[Any]
        if len(groups) == 1:
            g = groups[0]
            fast = self.fast
            if g.packed and fast is not None:  # the hot path: one packed write, one future
                command = g.command(est)
                fut = fast.call_now(command, timeout_s)
                try:
                    replies = [await (fut if fut is not None else fast.call(command, timeout_s))]
                except (NoScriptError, RedisConnectionError) as err:
                    replies = [await self._fast_failed(err, g.keys, ["", g.nums(est)], timeout_s)]
            else:
                replies = [await self._run_acquire(g, self._now_arg(), est, timeout_s)]
        else:
            now = self._now_arg()
            replies = list(await asyncio.gather(
                *(self._run_acquire(g, now, est, timeout_s) for g in groups),
                return_exceptions=True))
            failed = [r for r in replies if isinstance(r, BaseException)]
            if failed:
                await self._undo([g for g, r in zip(groups, replies)
                                  if not isinstance(r, BaseException) and r[0] == 0], est)
                raise failed[0]
        decision = self._decide(groups, replies)
        if decision.ok:
            decision.reservation = Reservation(limits, slots, est, self.name, plan=groups)
        elif len(groups) > 1:
            await self._undo([g for g, r in zip(groups, replies) if r[0] == 0], est)
        return decision

    @staticmethod
    def _decide(groups: list[Group], replies: list[Any]) -> Decision:
        """The decision of the groups' replies (`reservation` is the caller's to fill)."""
        req: Window | None = None
        tok: Window | None = None
        refusal: Decision | None = None
        for g, rep in zip(groups, replies):
            status, index, retry_ms = rep[0], rep[1], rep[2]
            if rep[3] >= 0:
                c = g.limits[rep[9] - 1]
                req = tighter(req, Window(c.scope, rep[3], rep[4], rep[5] / 1000.0))
            if rep[6] >= 0:
                c = g.limits[rep[10] - 1]
                tok = tighter(tok, Window(c.scope, rep[6], rep[7], rep[8] / 1000.0))
            if status == 2 and (refusal is None or not refusal.quota_exceeded):
                q = g.quotas[index - 1].check
                refusal = Decision(False, refused_scope=q.scope, refused_ident=q.ident,
                                   quota_exceeded=True)
            elif status == 1 and (refusal is None or (not refusal.quota_exceeded
                                                       and retry_ms / 1000 > refusal.retry_after_s)):
                c = g.limits[index - 1]
                refusal = Decision(False, refused_scope=c.scope, refused_ident=c.ident,
                                   retry_after_s=retry_ms / 1000.0)
        if refusal is not None:
            refusal.requests, refusal.tokens = req, tok
            return refusal
        return Decision(True, requests=req, tokens=tok)

    # ------------------------------------------------------------------ reconcile

    def _settle_args(self, g: Group, delta: int, back: int, tokens: int,
                     usd: float) -> list[str | int]:
        args: list[str | int] = [self._now_arg(), len(g.limits), len(g.quotas), delta, back]
        for c in g.limits:
            args += (num_arg(c.rpm), num_arg(c.tpm))
        for s in g.quotas:
            args += (tokens, repr(usd) if usd else "0", -back, s.expire_at)
        return args

    async def _settle(self, g: Group, delta: int, back: int, tokens: int, usd: float) -> None:
        await self._reconcile(keys=g.keys, args=self._settle_args(g, delta, back, tokens, usd))

    async def _undo(self, groups: list[Group], est: int) -> None:
        await asyncio.gather(*(self._settle(g, -est, 1, 0, 0.0) for g in groups))

    async def reconcile(self, reservation: Reservation, actual_tokens: int,
                        cost_usd: float = 0.0) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        actual = max(0, int(actual_tokens))
        delta = actual - reservation.estimate
        groups = [g for g in reservation.plan if g.quotas or (delta and g.tpm)]
        await asyncio.gather(*(self._settle(g, delta, 0, actual, cost_usd) for g in groups))

    def reconcile_soon(self, reservation: Reservation, actual_tokens: int,
                       cost_usd: float = 0.0) -> None:
        """Queue the settle; every settle queued in one event-loop tick goes to Redis in one
        pipeline (one round trip for many requests), off the response path."""
        if reservation.settled:
            return
        reservation.settled = True
        actual = max(0, int(actual_tokens))
        delta = actual - reservation.estimate
        for g in reservation.plan:
            if g.quotas or (delta and g.tpm):
                self._queue.append((g, delta, actual, cost_usd))
        if self._queue and not self._flushing:
            self._flushing = True
            self._bg.spawn(self._flush())

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # let the rest of this tick's requests queue theirs
            while self._queue:
                queue, self._queue = merge_settles(self._queue), []
                batch = [(g.keys, self._settle_args(g, delta, 0, tokens, usd))
                         for g, delta, tokens, usd in queue if g.quotas or delta]
                if self.fast is not None and batch:  # bounded by its own watchdog
                    batch = await self._fast_settle(self.fast, batch)
                if not batch:
                    continue
                async with asyncio.timeout(SETTLE_TIMEOUT_S):
                    pipe = self.client.pipeline(transaction=False)
                    for keys, args in batch:
                        await self._reconcile(keys=keys, args=args,
                                              client=pipe)  # type: ignore[arg-type]  # works; redis-py's hint is narrow
                    await pipe.execute()
        finally:
            self._flushing = False

    async def _fast_settle(self, fast: FastRedis, batch: list[Any]) -> list[Any]:
        """The batch through the pipelined connection (requests in flight together). Returns
        the settles the server did not run for want of the script (redis-py loads it)."""
        sha = self._reconcile.sha
        replies = await fast.evalsha_many(sha, batch, SETTLE_TIMEOUT_S)
        missing = [item for item, r in zip(batch, replies) if isinstance(r, NoScriptError)]
        failed = [r for r in replies if isinstance(r, BaseException)
                  and not isinstance(r, NoScriptError)]
        if failed:
            raise failed[0]
        return missing

    async def release(self, reservation: Reservation) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        await self._undo(reservation.plan, reservation.estimate)

    async def usage(self, quotas: Sequence[QuotaCheck]) -> list[QuotaUsage]:
        slots = [quota_slot(q, self._wall()) for q in quotas]
        pairs = [(s, key) for g in self._plan((), slots) for s, key in zip(g.quotas, g.keys)]
        reads = await asyncio.gather(*(self.client.hmget(key, ["req", "tok", "usd"])
                                       for _, key in pairs))  # together: one round trip's wait
        out = []
        for (s, _), (req, tok, usd) in zip(pairs, reads):
            q = s.check
            out.append(QuotaUsage(q.scope, q.ident, q.period, s.period_key,
                                  int(req or 0), int(tok or 0), round(float(usd or 0), 9),
                                  q.tokens, q.usd).fill_remaining())
        order = {(q.scope, q.ident): i for i, q in enumerate(quotas)}
        return sorted(out, key=lambda u: order[(u.scope, u.ident)])

    # ------------------------------------------------------------------ cooldowns

    @property
    def _cd_key(self) -> str:
        return f"{self.prefix}:{{cd}}"

    def _cd_now(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1000))

    async def trip(self, target_key: str, seconds: float) -> None:
        ms = max(1, int(seconds * 1000))
        await self._cooldown(keys=[self._cd_key], args=["trip", target_key, ms, self._cd_now()])

    async def clear(self, target_key: str) -> None:
        await self._cooldown(keys=[self._cd_key], args=["clear", target_key, 0, self._cd_now()])

    async def cooled(self) -> dict[str, float]:
        rows = await self._cooldown(keys=[self._cd_key], args=["read", "", 0, self._cd_now()])
        local = self._wall()
        server_now = int(rows[0])
        return {(k.decode() if isinstance(k, bytes) else str(k)): local + (int(u) - server_now) / 1000
                for k, u in zip(rows[1::2], rows[2::2])}
