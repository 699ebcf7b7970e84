"""The circuit breaker's rules, with an injected clock."""
from __future__ import annotations

from gateway.balancer import Balancer
from gateway.config.schema import Cooldown
from gateway.types import ProviderSpec, Target

T = Target(ProviderSpec(name="p", adapter="openai"), "m")


def _balancer(**kw: float) -> tuple[Balancer, list[float]]:
    now = [100.0]
    opts = {"failures": 3, "window_s": 10.0, "cooldown_s": 30.0, **kw}
    cd = Cooldown(**opts)  # type: ignore[arg-type]
    return Balancer(cd, clock=lambda: now[0]), now


def test_failures_outside_the_window_do_not_trip() -> None:
    bal, now = _balancer()
    for _ in range(5):
        assert not bal.failure(T)
        now[0] += 6.0  # two failures at most inside any 10 s window
    assert bal.available(T) and bal.is_up(T)


def test_n_failures_inside_the_window_trip_for_the_cool_down() -> None:
    bal, now = _balancer()
    assert not bal.failure(T) and not bal.failure(T)
    assert bal.failure(T)
    assert not bal.available(T) and not bal.is_up(T)
    assert bal.wait_s(T) == 30.0
    now[0] += 30.0
    assert bal.available(T) and bal.is_up(T)  # half-open


def test_half_open_lets_one_probe_through_and_its_verdict_decides() -> None:
    bal, now = _balancer(failures=1)
    bal.failure(T)
    now[0] += 31.0
    assert bal.begin(T) is True  # the probe
    assert not bal.available(T)  # the others skip it meanwhile
    bal.end(T)
    assert bal.failure(T, probe=True)  # a failed probe opens it again at once
    assert not bal.available(T)
    now[0] += 31.0
    assert bal.begin(T)
    bal.end(T)
    bal.success(T, 0.1, probe=True)
    assert bal.available(T) and bal.begin(T) is False


def test_a_probe_cut_short_frees_the_slot_but_only_its_own() -> None:
    bal, now = _balancer(failures=1)
    bal.failure(T)
    now[0] += 31.0
    assert bal.begin(T)
    bal.release_probe(T, probe=False)  # another attempt's cancel does not free the probe
    assert not bal.available(T)
    bal.release_probe(T, probe=True)
    assert bal.available(T)


def test_a_late_success_from_before_the_trip_does_not_close_the_breaker() -> None:
    bal, _ = _balancer(failures=1)
    bal.failure(T, rate_limited=True)
    bal.success(T, 0.2, probe=False)
    assert not bal.available(T) and bal.rate_limited(T)


def test_a_429_trips_for_its_retry_after_or_the_cool_down() -> None:
    bal, now = _balancer(failures=100)
    assert bal.failure(T, rate_limited=True, retry_after_s=2.0)
    assert bal.wait_s(T) == 2.0
    now[0] += 2.0
    assert bal.available(T)
    bal.success(T, 0.1)
    assert bal.failure(T, rate_limited=True)
    assert bal.wait_s(T) == 30.0


def test_the_owner_of_a_trip_may_retry_during_the_cool_down() -> None:
    bal, _ = _balancer(failures=1)
    bal.failure(T)
    assert not bal.available(T)
    assert bal.available(T, owner=True)
    bal.begin(T)  # the owner's retry is the probe: nobody else, not even the owner twice
    assert not bal.available(T, owner=True)


def test_trips_shared_by_other_replicas_take_the_target_out() -> None:
    import time

    bal, _ = _balancer()
    bal.shared_until[T.key] = time.time() + 5
    assert not bal.available(T) and not bal.is_up(T)
    assert 4 < bal.wait_s(T) <= 5
    bal.shared_until[T.key] = time.time() - 1
    assert bal.available(T)
