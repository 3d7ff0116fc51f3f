"""TokenBucketLimiter on a fake clock: pacing on a grid, full start, FIFO, in-flight cap, stray 429s
versus overload, CUBIC recovery, spacing from measured jitter."""

from __future__ import annotations

import itertools

import anyio
import pytest

from async_hi import FakeClock, LimiterConfig, Quota, RateLimiter, TokenBucketLimiter
from async_hi.contract import DEFAULT_QUOTAS

pytestmark = pytest.mark.anyio

UPD = "UpdateImageSetMetadata"
GET = "GetImageSet"


def limiter(clock: FakeClock, **kw: object) -> TokenBucketLimiter:
    """Without headroom, so the numbers below are the quota's own."""
    kw.setdefault("headroom", 0.0)
    return TokenBucketLimiter(LimiterConfig(**kw), clock=clock)  # type: ignore[arg-type]


async def acquire_times(lim: TokenBucketLimiter, clock: FakeClock, op: str, n: int) -> list[float]:
    times: list[float] = []

    async def one() -> None:
        await lim.acquire(op)
        times.append(clock.now())
        lim.release(op)

    async with clock.autojump(), anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return times


def test_is_a_rate_limiter() -> None:
    assert isinstance(TokenBucketLimiter(), RateLimiter)


async def test_default_quota_update_starts_full_and_paces_at_4_seconds() -> None:
    clock = FakeClock()
    lim = TokenBucketLimiter(clock=clock)  # the defaults: DEFAULT_QUOTAS less 2 % headroom
    times = await acquire_times(lim, clock, UPD, 4)
    step = 4.0 / 0.98
    assert times == pytest.approx([0.0, step, 2 * step, 3 * step])  # the first goes at once
    assert lim.current_rate(UPD) == pytest.approx(DEFAULT_QUOTAS[UPD].rate * 0.98)


async def test_start_empty_makes_the_first_request_wait_one_interval() -> None:
    clock = FakeClock()
    lim = limiter(clock, start_empty=True, quotas={UPD: Quota(rate=2.0, burst=3)})
    times = await acquire_times(lim, clock, UPD, 3)
    assert times == pytest.approx([0.5, 1.0, 1.5])


async def test_send_times_follow_the_grid_even_when_waiters_wake_late() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={UPD: Quota(rate=10.0, burst=2)})
    got: list[float] = []

    async def one() -> None:
        got.append(await lim.acquire(UPD))
        lim.release(UPD)

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
        await clock.settle()
        assert got == [0.0, 0.0]  # the burst at once
        await clock.advance(0.45)
    # the send times are the grid's, whenever each waiter woke
    assert got == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3, 0.4])


class StallClock(FakeClock):
    """A fake clock whose first sleep wakes ``stall`` seconds late (the loop was busy)."""

    def __init__(self, stall: float) -> None:
        super().__init__()
        self.stall = stall

    async def sleep(self, seconds: float) -> None:
        extra, self.stall = self.stall, 0.0
        await super().sleep(seconds + extra if seconds > 0 else seconds)


@pytest.mark.parametrize(("burst", "caught_up_at_once"), [(1, False), (2, True)])
async def test_a_stall_is_caught_up_at_once_only_where_the_quota_keeps_a_burst(
    burst: int, caught_up_at_once: bool
) -> None:
    clock = StallClock(0.3)
    lim = limiter(clock, quotas={UPD: Quota(rate=10.0, burst=burst)}, headroom=0.1, jitter_factor=0.0)
    interval, gap = 1 / 9, (1 / 9) * 0.95
    went: list[float] = []

    async def one() -> None:
        await lim.acquire(UPD)
        went.append(clock.now())
        lim.release(UPD)

    async with clock.autojump(), anyio.create_task_group() as tg:
        for _ in range(burst + 3):
            tg.start_soon(one)
    stalled = went[burst:]  # the first waiter after the burst slept through a 0.3 s stall
    assert stalled[0] == pytest.approx(interval + 0.3)
    gaps = [b - a for a, b in itertools.pairwise(stalled)]
    if caught_up_at_once:  # the grid's missed slots go at once: the service's bucket refilled
        assert gaps[:2] == pytest.approx([0.0, 0.0])
    else:  # burst 1: caught up at the pace of the send gap, never two at once
        assert gaps == pytest.approx([gap, gap])
        assert lim.send_gap(UPD) == pytest.approx(gap)


async def test_burst_accumulates_after_idle_but_never_above_burst() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={GET: Quota(rate=10, burst=3)})
    lim.current_rate(GET)  # creates the bucket (empty)
    await clock.advance(100.0)  # idle: refills to burst 3, not 1000
    start = clock.now()
    times = await acquire_times(lim, clock, GET, 5)
    assert [round(t - start, 6) for t in times] == [0.0, 0.0, 0.0, 0.1, 0.2]


async def test_fifo_order_is_arrival_order() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={UPD: Quota(rate=1, burst=1)})
    order: list[int] = []

    async def one(k: int) -> None:
        await lim.acquire(UPD)
        order.append(k)
        lim.release(UPD)

    async with clock.autojump(), anyio.create_task_group() as tg:
        for k in range(20):
            tg.start_soon(one, k)
            await clock.settle()  # k is queued before k+1 arrives
    assert order == list(range(20))
    # only the head sleeps: one timer, not twenty
    assert max(clock.sleeps) <= 1.0


async def test_cancelled_waiter_leaves_the_queue_and_the_next_proceeds() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={UPD: Quota(rate=1, burst=1)})
    got: list[str] = []

    async def named(name: str) -> None:
        await lim.acquire(UPD)
        got.append(name)
        lim.release(UPD)

    async with anyio.create_task_group() as tg:
        tg.start_soon(named, "a")
        await clock.settle()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await lim.acquire(UPD)  # cancelled at once: must not take or block a place
        tg.start_soon(named, "c")
        await clock.advance(1.0)
        await clock.advance(1.0)
    assert got == ["a", "c"]
    assert lim.waiting(UPD) == 0


async def test_in_flight_cap_holds_and_slots_pass_on_in_order() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={GET: Quota(rate=1000, burst=1000)}, max_in_flight=2)
    lim.current_rate(GET)  # the bucket is created (empty) on first use
    await clock.advance(1.0)
    entered: list[int] = []

    async def one(k: int) -> None:
        await lim.acquire(GET)
        entered.append(k)

    async with anyio.create_task_group() as tg:
        for k in range(5):
            tg.start_soon(one, k)
        await clock.settle()
        assert entered == [0, 1]
        assert lim.in_flight(GET) == 2
        lim.release(GET)
        await clock.settle()
        assert entered == [0, 1, 2]
        lim.release(GET)
        lim.release(GET)
        await clock.settle()
        assert entered == [0, 1, 2, 3, 4]
        assert lim.in_flight(GET) == 2
        lim.release(GET)
        lim.release(GET)
    assert lim.in_flight(GET) == 0


async def settle_rate(lim: TokenBucketLimiter, op: str, successes: int) -> None:
    for _ in range(successes):
        await lim.on_success(op)


async def test_a_lone_429_among_successes_does_not_cut_and_two_close_together_do() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={UPD: Quota(rate=20.0, burst=1)})
    await settle_rate(lim, UPD, 100)
    await lim.on_throttle(UPD, None)  # a stray 429
    assert lim.current_rate(UPD) == 20.0
    await settle_rate(lim, UPD, 10)
    await lim.on_throttle(UPD, None)  # another, ten answers later: still not sustained
    assert lim.current_rate(UPD) == 20.0
    await lim.on_throttle(UPD, None)  # two in a row: sustained
    assert lim.current_rate(UPD) == pytest.approx(14.0)


async def test_a_transient_cut_returns_along_the_concave_curve_without_holding() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={UPD: Quota(rate=20.0, burst=1)}, recovery_requests=8)
    await settle_rate(lim, UPD, 60)  # proven: more than hold_requests clean answers
    await lim.on_throttle(UPD, None)
    await lim.on_throttle(UPD, None)
    assert lim.current_rate(UPD) == pytest.approx(14.0)
    await clock.advance(0.2)  # K = 8 intervals at 20 tps = 0.4 s; half way: 20 - 6 (1/2)^3
    assert lim.current_rate(UPD) == pytest.approx(19.25)
    await clock.advance(0.2)
    assert lim.current_rate(UPD) == pytest.approx(20.0)
    await clock.advance(5.0)
    assert lim.current_rate(UPD) == pytest.approx(20.0)  # never above the ceiling


async def test_throttled_again_while_holding_cuts_the_flat_rate_and_holds_longer_then_probes() -> None:
    clock = FakeClock()
    # told 20 tps; 429s persist: the first cut is transient, the next while climbing is overload
    lim = limiter(clock, quotas={UPD: Quota(rate=20.0, burst=1)}, hold_requests=50, recovery_requests=8)
    await lim.on_throttle(UPD, None)
    await lim.on_throttle(UPD, None)
    assert lim.current_rate(UPD) == pytest.approx(14.0)  # the first cut: transient, back to 20
    await clock.advance(1 / 14)
    climbing = 20 - 6 * (1 - (1 / 14) / 0.4) ** 3
    await lim.on_throttle(UPD, None)  # again, while climbing: overload
    assert lim.current_rate(UPD) == pytest.approx(climbing * 0.7)
    w = 0.98 * climbing  # (no success since the first cut: at most the rate that failed)
    k = 8 / w
    await clock.advance(k)
    assert lim.current_rate(UPD) == pytest.approx(w)  # back up to w, and holding there
    await lim.on_throttle(UPD, None)  # and again, at that flat rate: cut it, hold twice as long
    assert lim.current_rate(UPD) == pytest.approx(0.7 * w)
    w2 = 0.7 * w
    await clock.advance(8 / w2 + 2 * 50 / w2 - 0.01)
    assert lim.current_rate(UPD) == pytest.approx(w2)
    await clock.advance(0.01 + 8 / w2)  # one K into the probe: w (1 + 0.3)
    assert lim.current_rate(UPD) == pytest.approx(w2 * 1.3)


async def test_overload_while_climbing_returns_below_the_last_rate_that_succeeded() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={UPD: Quota(rate=20.0, burst=1)}, recovery_requests=8)
    await settle_rate(lim, UPD, 60)
    await lim.on_throttle(UPD, None)
    await lim.on_throttle(UPD, None)  # transient cut: back to 20 over 0.4 s
    await clock.advance(0.1)
    await lim.on_success(UPD)  # succeeded at 20 - 6 (3/4)^3
    ok = 20 - 6 * 0.75**3
    await clock.advance(0.05)
    climbing = 20 - 6 * 0.625**3
    await lim.on_throttle(UPD, None)  # failed while climbing past it: overload
    assert lim.current_rate(UPD) == pytest.approx(climbing * 0.7)
    await clock.advance(8 / (0.98 * ok))
    assert lim.current_rate(UPD) == pytest.approx(0.98 * ok)  # and holds there


async def test_a_volley_of_429s_from_before_the_cut_counts_once() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={UPD: Quota(rate=4.0, burst=1)})
    lim.current_rate(UPD)
    for _ in range(8):  # eight requests in flight all come back 429 together
        await lim.on_throttle(UPD, None)
    assert lim.current_rate(UPD) == pytest.approx(2.8)
    await clock.advance(1 / 2.8)  # one interval at the new rate later, a 429 is news again
    rising = 4 - 1.2 * (1 - (1 / 2.8) / 2) ** 3  # on its way back (K = 8 intervals at 4 tps)
    await lim.on_throttle(UPD, None)
    assert lim.current_rate(UPD) == pytest.approx(0.7 * rising)


async def test_a_cut_drains_the_burst_and_cuts_floor_at_001() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={UPD: Quota(rate=1.0, burst=5)})
    lim.current_rate(UPD)
    await clock.advance(10.0)
    await lim.on_throttle(UPD, None)
    await lim.on_throttle(UPD, None)
    assert lim.current_rate(UPD) == pytest.approx(0.7)
    # drained: the next send is at least one interval at the new rate later, not one of the 5
    # saved, and the ones after it are spaced too
    t0 = clock.now()
    times = await acquire_times(lim, clock, UPD, 3)
    assert times[0] - t0 >= 1 / 0.7
    assert min(b - a for a, b in itertools.pairwise(times)) > 0.5
    for _ in range(40):
        await clock.advance(1000.0)
        await lim.on_throttle(UPD, None)
    assert lim.current_rate(UPD) == pytest.approx(0.01)


async def test_retry_after_pauses_only_that_operation() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={UPD: Quota(rate=100, burst=1), GET: Quota(rate=100, burst=1)})
    await clock.advance(1.0)
    lim.current_rate(UPD)
    lim.current_rate(GET)
    await clock.advance(1.0)
    await lim.on_throttle(UPD, 5.0)
    t0 = clock.now()
    get_times = await acquire_times(lim, clock, GET, 3)
    assert [round(t - t0, 6) for t in get_times] == [0.0, 0.01, 0.02]  # reads untouched
    assert lim.current_rate(GET) == 100
    upd_times = await acquire_times(lim, clock, UPD, 1)
    assert upd_times[0] - t0 == pytest.approx(5.0)


async def test_a_throttle_on_updates_never_slows_reads() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    lim.current_rate(UPD)
    lim.current_rate(GET)
    for _ in range(30):
        await clock.advance(0.1)
        await lim.on_throttle(UPD, 30.0)
        await clock.advance(500.0)
        await lim.on_throttle(UPD, 30.0)
    assert lim.current_rate(UPD) == pytest.approx(0.01)
    assert lim.current_rate(GET) == DEFAULT_QUOTAS[GET].rate
    t0 = clock.now()
    times = await acquire_times(lim, clock, GET, 60)
    # 50 saved tokens at once, then 25 tps
    assert times[49] - t0 == pytest.approx(0.0)
    assert times[59] - t0 == pytest.approx(10 / 25)


async def test_not_adaptive_keeps_the_rate() -> None:
    clock = FakeClock()
    lim = limiter(clock, adaptive=False)
    await lim.on_throttle(UPD, None)
    assert lim.current_rate(UPD) == DEFAULT_QUOTAS[UPD].rate


async def test_rate_change_hook_and_repr() -> None:
    clock = FakeClock()
    seen: list[tuple[str, float]] = []
    lim = TokenBucketLimiter(
        LimiterConfig(headroom=0.0, quotas={UPD: Quota(rate=20.0, burst=1)}),
        clock=clock,
        scope="acct/us-east-1",
        on_rate_change=lambda o, r: seen.append((o, r)),
    )
    await settle_rate(lim, UPD, 60)
    await lim.on_throttle(UPD, None)
    assert seen == []  # a lone 429 changes nothing
    await lim.on_throttle(UPD, None)
    assert seen == [(UPD, pytest.approx(14.0))]
    await clock.advance(0.2)
    await lim.on_success(UPD)
    assert len(seen) == 1  # on the way back: not reported every step
    await clock.advance(0.2)
    await lim.on_success(UPD)
    assert seen[1:] == [(UPD, pytest.approx(20.0))]  # back where it was
    assert "acct/us-east-1" in repr(lim)
    assert UPD in repr(lim)


class LateClock(FakeClock):
    """A fake clock whose every sleep wakes ``late`` seconds after it was due."""

    def __init__(self, late: float) -> None:
        super().__init__()
        self.late = late

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + self.late if seconds > 0 else seconds)


async def test_burst_1_sends_are_spaced_by_the_measured_timer_lateness() -> None:
    clock = LateClock(0.001)
    lim = limiter(
        clock, quotas={UPD: Quota(rate=50.0, burst=1), GET: Quota(rate=50.0, burst=5)}, max_margin=0.2
    )
    assert lim.send_gap(UPD) == pytest.approx(0.02)  # nothing measured yet
    assert lim.send_gap(GET) == 0.0  # bursts absorb jitter: no spacing needed
    got: list[float] = []

    async def one() -> None:
        got.append(await lim.acquire(UPD))
        lim.release(UPD)

    async with clock.autojump(), anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(one)
    assert lim.jitter(UPD) == pytest.approx(0.001)
    # the interval grew to 1/quota + the 90th percentile of the lateness
    assert got[-1] - got[-2] == pytest.approx(0.021)
    assert lim.send_gap(UPD) == pytest.approx(0.021)
    capped = limiter(LateClock(0.05), quotas={UPD: Quota(rate=50.0, burst=1)}, max_margin=0.05)
    got.clear()
    lim = capped
    async with capped.clock.autojump(), anyio.create_task_group() as tg:  # type: ignore[attr-defined]
        for _ in range(20):
            tg.start_soon(one)
    assert capped.send_gap(UPD) == pytest.approx(0.021)  # at most 5 % of 1/quota


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_in_flight", 0),
        ("headroom", 0.5),
        ("cut", 1.0),
        ("floor_rate", 0.0),
        ("recovery_requests", 0.0),
        ("hold_requests", 0),
        ("plateau", 1.5),
        ("throttle_window", 0),
        ("throttle_threshold", 0.0),
        ("jitter_factor", -1.0),
        ("max_margin", 0.5),
        ("max_sleep", 0.0),
    ],
)
def test_config_validation_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"LimiterConfig.{field}"):
        LimiterConfig(**{field: value})  # type: ignore[arg-type]


def test_config_rejects_non_quota() -> None:
    with pytest.raises(ValueError, match="quotas"):
        LimiterConfig(quotas={UPD: 4})  # type: ignore[dict-item]
