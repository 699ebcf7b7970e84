"""How a request's limits and quotas become Redis script calls ("slot groups"): the keys, with
their Cluster hash tags, the numbers the scripts take, the packed EVALSHA of the hot path, and
the merging of a flush's settles. Pure computation, no I/O: `gateway.limits.redis_backend`
runs what is planned here.

Keys (prefix `my` by default) carry a hash tag so that every scope of one group lands in
one Redis Cluster slot: a key scope (limits and quota) has `{k:<key id>}`, a team scope
`{t:<team>}`, a model (route) scope `{m:<route>}`, a provider scope `{p:<provider>}`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from gateway.limits.fastredis import pack
from gateway.limits.spec import LimitCheck, QuotaSlot


def _esc(ident: str) -> str:
    return ident.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


_TAG = {"key": "k", "team": "t", "model": "m", "provider": "p"}


def slot_tag(scope: str, ident: str) -> str:
    short = _TAG.get(scope)
    return f"{short}:{_esc(ident)}" if short else f"s:{_esc(scope)}:{_esc(ident)}"


def num_arg(v: int | float | None) -> str:
    """A limit as the scripts take it (-1: none)."""
    return "-1" if v is None else repr(v)


@dataclass(slots=True)
class Group:
    """One script call's share of a request: its limits, quotas and keys. Groups are built once
    per set of checks and shared by every request with that set (read-only once planned)."""

    limits: list[LimitCheck] = field(default_factory=list)
    quotas: list[QuotaSlot] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    nums_head: str = ""  # ARGV[2] is nums_head + estimate + nums_tail
    nums_tail: str = ""
    packed: bytes = b""  # EVALSHA up to ARGV[2], packed (pipelined connection, server clock)
    same: tuple[Any, ...] = ()  # equal for groups of the same keys and limits
    tpm: bool = False  # a limit of the group counts tokens

    def nums(self, est: int) -> str:
        return f"{self.nums_head}{est}{self.nums_tail}"

    def command(self, est: int) -> bytes:
        """The whole packed EVALSHA of this group for `est` tokens."""
        arg = self.nums(est).encode()
        return b"%s$%d\r\n%s\r\n" % (self.packed, len(arg), arg)


PLANS_MAX = 4096  # sets of checks whose groups are remembered


Settle = tuple[Group, int, int, float]  # a queued settle: group, token delta, tokens, USD


def merge_settles(queue: list[Settle]) -> list[Settle]:
    """The settles of one flush with those of the same keys and limits summed into one (token
    deltas, quota tokens and USD add up): a busy key settles once per flush, not once per
    request, and Redis runs one script instead of many. Queued settles never give requests
    back, so request counts are untouched; a token bucket gets the same sum, capped at its
    size once instead of after each part."""
    if len(queue) < 2:
        return queue
    merged: dict[tuple[Any, ...], list[Any]] = {}
    for g, delta, tokens, usd in queue:
        acc = merged.get(g.same)
        if acc is None:
            merged[g.same] = [g, delta, tokens, usd]
        else:
            acc[1] += delta
            acc[2] += tokens
            acc[3] += usd
    return [(g, delta, tokens, usd) for g, delta, tokens, usd in merged.values()]


class Planner:
    """Plans the slot groups of a backend's requests, remembering each set of checks' groups.
    `sha`: the acquire script's, to pack each group's EVALSHA once ("" when the backend does
    not use the pipelined connection with the server's clock)."""

    def __init__(self, prefix: str, cluster: bool, sha: str = "") -> None:
        self.prefix = prefix
        self.cluster = cluster
        self.sha = sha
        self._plans: dict[tuple[Any, ...], list[Group]] = {}

    def groups(self, limits: tuple[LimitCheck, ...], slots: tuple[QuotaSlot, ...]) -> list[Group]:
        """`plan`, remembered per set of checks: the keys, the numbers and the packed command
        of a key's requests are the same every time but for the estimate."""
        plan = self._plans.get((limits, slots))
        if plan is None:
            plan = self.plan(limits, slots)
            if len(self._plans) >= PLANS_MAX:
                self._plans.clear()
            self._plans[(limits, slots)] = plan
        return plan

    def plan(self, limits: Sequence[LimitCheck], slots: Sequence[QuotaSlot]) -> list[Group]:
        groups: dict[str, Group] = {}
        p = self.prefix
        for c in limits:
            tag = slot_tag(c.scope, c.ident)
            g = groups.setdefault(tag if self.cluster else "", Group())
            g.limits.append(c)
            g.keys.append(f"{p}:rl:{{{tag}}}:{c.scope}:{_esc(c.ident)}")
        quota_keys: dict[str, list[str]] = {}
        for s in slots:
            tag = slot_tag(s.check.scope, s.check.ident)
            g = groups.setdefault(tag if self.cluster else "", Group())
            g.quotas.append(s)
            quota_keys.setdefault(tag if self.cluster else "", []).append(
                f"{p}:q:{{{tag}}}:{s.check.scope}:{_esc(s.check.ident)}:{s.period_key}")
        for name, keys in quota_keys.items():
            groups[name].keys.extend(keys)
        for g in groups.values():
            tail = [x for c in g.limits for x in (num_arg(c.rpm), num_arg(c.tpm))] + [
                x for s in g.quotas
                for x in (num_arg(s.check.tokens), num_arg(s.check.usd), str(s.expire_at))]
            g.nums_head = f"{len(g.limits)} {len(g.quotas)} "
            g.nums_tail = "".join(" " + x for x in tail)
            g.same = (*g.keys, g.nums_tail)
            g.tpm = any(c.tpm is not None for c in g.limits)
            if self.sha:
                full = pack(("EVALSHA", self.sha, len(g.keys), *g.keys, "", "-"))
                g.packed = full[:-len(b"$1\r\n-\r\n")]
        return list(groups.values())
