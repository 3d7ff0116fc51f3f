"""TokenBucketLimiter on a fake clock: pacing, empty start, FIFO, in-flight cap, adaptive cut and recovery."""

from __future__ import annotations

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


async def test_default_quota_update_starts_empty_and_paces_at_4_seconds() -> None:
    clock = FakeClock()
    lim = TokenBucketLimiter(clock=clock)  # the defaults: DEFAULT_QUOTAS less 2 % headroom
    times = await acquire_times(lim, clock, UPD, 4)
    step = 4.0 / 0.98
    assert times == pytest.approx([step, 2 * step, 3 * step, 4 * step])
    assert lim.current_rate(UPD) == pytest.approx(DEFAULT_QUOTAS[UPD].rate * 0.98)


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


async def test_throttle_cuts_by_07_drains_and_floors_at_001() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={UPD: Quota(rate=1.0, burst=5)})
    await clock.advance(0)
    lim.current_rate(UPD)  # bucket exists
    await clock.advance(10.0)
    await lim.on_throttle(UPD, None)
    assert lim.current_rate(UPD) == pytest.approx(0.7)
    # drained: the next token comes one interval at the new rate later, not from the 5 saved
    t0 = clock.now()
    times = await acquire_times(lim, clock, UPD, 1)
    assert times[0] - t0 == pytest.approx(1 / 0.7)
    for _ in range(40):
        await clock.advance(1000.0)
        await lim.on_throttle(UPD, None)
    assert lim.current_rate(UPD) == pytest.approx(0.01)


async def test_a_volley_of_429s_from_before_the_cut_counts_once() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={UPD: Quota(rate=4.0, burst=1)})
    lim.current_rate(UPD)
    for _ in range(8):  # eight requests in flight all come back 429 together
        await lim.on_throttle(UPD, None)
    assert lim.current_rate(UPD) == pytest.approx(2.8)
    await clock.advance(1 / 2.8)  # one interval at the new rate later, a 429 is news again
    await lim.on_throttle(UPD, None)
    assert lim.current_rate(UPD) == pytest.approx(1.96)


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


async def test_recovery_is_additive_slow_and_capped_at_the_ceiling() -> None:
    clock = FakeClock()
    lim = limiter(clock, quotas={UPD: Quota(rate=4.0, burst=1)}, recovery_interval=2.0, recovery_step=0.05)
    lim.current_rate(UPD)
    await clock.advance(1.0)
    await lim.on_throttle(UPD, None)
    assert lim.current_rate(UPD) == pytest.approx(2.8)
    await clock.advance(1.0)
    await lim.on_success(UPD)  # not yet a clean interval
    assert lim.current_rate(UPD) == pytest.approx(2.8)
    rates = []
    for _ in range(16):
        await clock.advance(2.0)
        await lim.on_success(UPD)
        await lim.on_success(UPD)  # a second success in the same interval adds nothing
        rates.append(round(lim.current_rate(UPD), 6))
    # full steps (5 % of the ceiling) up to 90 % of the rate that failed, then quarter steps
    assert rates[:12] == [3.0, 3.2, 3.4, 3.6, 3.65, 3.7, 3.75, 3.8, 3.85, 3.9, 3.95, 4.0]
    assert max(rates) == 4.0  # never above the ceiling


async def test_slow_operations_recover_per_request_not_per_second() -> None:
    clock = FakeClock()
    lim = limiter(clock, recovery_requests=5)
    lim.current_rate(UPD)
    await clock.advance(10.0)
    await lim.on_throttle(UPD, None)  # 0.25 -> 0.175 tps: a clean interval is 5 / 0.175 = 28.6 s
    await clock.advance(20.0)
    await lim.on_success(UPD)
    assert lim.current_rate(UPD) == pytest.approx(0.175)
    await clock.advance(9.0)
    await lim.on_success(UPD)
    assert lim.current_rate(UPD) == pytest.approx(0.175 + 0.0125)


async def test_a_throttle_on_updates_never_slows_reads() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    lim.current_rate(UPD)
    lim.current_rate(GET)
    for _ in range(30):
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
        LimiterConfig(headroom=0.0),
        clock=clock,
        scope="acct/us-east-1",
        on_rate_change=lambda o, r: seen.append((o, r)),
    )
    await lim.on_throttle(UPD, None)
    assert seen == [(UPD, pytest.approx(0.175))]
    assert "acct/us-east-1" in repr(lim)
    assert UPD in repr(lim)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_in_flight", 0),
        ("headroom", 0.5),
        ("cut", 1.0),
        ("floor_rate", 0.0),
        ("recovery_step", 0.0),
        ("max_sleep", 0.0),
    ],
)
def test_config_validation_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"LimiterConfig.{field}"):
        LimiterConfig(**{field: value})  # type: ignore[arg-type]


def test_config_rejects_non_quota() -> None:
    with pytest.raises(ValueError, match="quotas"):
        LimiterConfig(quotas={UPD: 4})  # type: ignore[dict-item]
