"""Which usage-store failures are for good: a batch a store refuses for good is split down to
the record at fault (gateway.accounting.sink); anything else is retried with backoff."""
from __future__ import annotations

import re

# Redis error replies that mean "not now", not "never": the server is busy (a long script),
# loading, a replica, failing over, out of memory, refusing writes after a failed snapshot,
# moving slots, or refusing this client (ACL, auth: the operator's to fix, not the record's).
_TRANSIENT_CODES = frozenset({
    "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOSCRIPT", "OOM",
    "MISCONF", "NOREPLICAS", "MOVED", "ASK", "CROSSSLOT", "NOAUTH", "NOPERM", "WRONGPASS",
    "UNBLOCKED",
})
# the same codes inside a wrapped reply (Redis < 7: "ERR Error running script ...: -OOM ...")
_TRANSIENT_CODE_IN_TEXT = re.compile(r"(?:^|-)(?:%s)\b" % "|".join(sorted(_TRANSIENT_CODES)))
_TRANSIENT_TEXT = ("max number of clients reached", "script killed")


def is_permanent(exc: BaseException) -> bool:
    """True when writing the same records again cannot succeed: a value the store cannot
    encode (TypeError, ValueError, OverflowError, redis-py's DataError) or an error reply from
    Redis (e.g. a script error) that is not one of the "not now" replies above. Everything
    else (connection lost, timeouts, OSError, any other exception) may pass and is retried."""
    if type(exc).__module__.startswith("redis"):
        return _redis_permanent(exc)
    if isinstance(exc, OSError):
        return False
    return isinstance(exc, (TypeError, ValueError, OverflowError))


def _redis_permanent(exc: BaseException) -> bool:
    # imported here, not at the top: redis-py (and the OpenTelemetry SDK it loads when present)
    # costs ~11 MiB of RSS that a gateway without Redis never needs; an exception of its own
    # means it is loaded already
    from redis.exceptions import (
        AskError, ClusterCrossSlotError, ClusterDownError, DataError, NoPermissionError,
        NoScriptError, OutOfMemoryError, ReadOnlyError, RedisError, ResponseError, TryAgainError,
    )

    if isinstance(exc, ResponseError):
        if isinstance(exc, (AskError, ClusterCrossSlotError, ClusterDownError, NoPermissionError,
                            NoScriptError, OutOfMemoryError, ReadOnlyError, TryAgainError)):
            return False
        text = str(exc)
        code = getattr(exc, "status_code", None) or text.split(" ", 1)[0]
        if code in _TRANSIENT_CODES or _TRANSIENT_CODE_IN_TEXT.search(text):
            return False
        lowered = text.lower()
        return not any(part in lowered for part in _TRANSIENT_TEXT)
    if isinstance(exc, DataError):
        return True
    if isinstance(exc, (OSError, RedisError)):  # before ValueError: a class that is both stays
        return False
    return isinstance(exc, (TypeError, ValueError, OverflowError))
