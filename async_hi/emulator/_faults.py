"""Per-operation throttling and seeded fault injection for the emulator."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from async_hi.contract import OPERATIONS, Quota

__all__ = ["FaultConfig", "FaultInjector", "Throttle"]


class Throttle:
    """One token bucket per operation, full at start (as an idle account is).

    Args:
        quotas: operation -> Quota; operations not listed are not throttled.
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(self, quotas: Mapping[str, Quota], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.quotas = dict(quotas)
        self.clock = clock
        now = clock()
        self._tokens = {op: float(q.burst) for op, q in self.quotas.items()}
        self._stamp = {op: now for op in self.quotas}

    def allow(self, operation: str) -> bool:
        """Take a token for ``operation`` if one is there; False means answer 429."""
        quota = self.quotas.get(operation)
        if quota is None:
            return True
        now = self.clock()
        tokens = min(
            float(quota.burst), self._tokens[operation] + (now - self._stamp[operation]) * quota.rate
        )
        self._stamp[operation] = now
        if tokens >= 1.0:
            self._tokens[operation] = tokens - 1.0
            return True
        self._tokens[operation] = tokens
        return False

    def retry_after(self, operation: str) -> float:
        """Seconds until ``operation`` has a token again."""
        quota = self.quotas[operation]
        return max(0.0, (1.0 - self._tokens[operation]) / quota.rate)


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultConfig:
    """Seeded, reproducible fault injection. Each rate is a probability per request.

    Args:
        seed: seed of the injector's random stream (same seed, same faults).
        error_rate: answer 500 InternalServerException (nothing applied).
        throttle_rate: answer 429 ThrottlingException regardless of quota (nothing applied).
        slow_rate: delay the response by ``slow_seconds``.
        slow_seconds: the delay of a slow response.
        drop_rate: close the connection without answering (nothing applied).
        lost_response_rate: apply the update, then close the connection
            without answering (UpdateImageSetMetadata only).
        operations: operations faults apply to (default: all four).
    """

    seed: int = 0
    error_rate: float = 0.0
    throttle_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 1.0
    drop_rate: float = 0.0
    lost_response_rate: float = 0.0
    operations: frozenset[str] = field(default_factory=lambda: frozenset(OPERATIONS))

    def __post_init__(self) -> None:
        for name in ("error_rate", "throttle_rate", "slow_rate", "drop_rate", "lost_response_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FaultConfig.{name} must be within 0..1, got {value!r}")
        if self.slow_seconds < 0:
            raise ValueError(f"FaultConfig.slow_seconds must be >= 0, got {self.slow_seconds!r}")
        unknown = set(self.operations) - set(OPERATIONS)
        if unknown:
            raise ValueError(f"FaultConfig.operations has unknown operation(s): {', '.join(sorted(unknown))}")
        if self.error_rate + self.throttle_rate + self.drop_rate + self.lost_response_rate > 1.0:
            raise ValueError(
                "FaultConfig: error, throttle, drop and lost-response rates add up to more than 1"
            )

    @property
    def active(self) -> bool:
        """Any fault rate is above zero."""
        return any(
            getattr(self, n) > 0
            for n in ("error_rate", "throttle_rate", "slow_rate", "drop_rate", "lost_response_rate")
        )


@dataclass(frozen=True, slots=True)
class Fault:
    """The fault drawn for one request: ``kind`` is None, "error", "throttle", "drop" or "lost"."""

    kind: str | None
    delay: float


class FaultInjector:
    """Draws faults from a seeded stream, one draw per AWS request."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self.counts: dict[str, int] = {"error": 0, "throttle": 0, "drop": 0, "lost": 0, "slow": 0}

    def draw(self, operation: str) -> Fault:
        c = self.config
        if not c.active or operation not in c.operations:
            return Fault(None, 0.0)
        r = self._rng.random()
        slow = self._rng.random() < c.slow_rate
        delay = c.slow_seconds if slow else 0.0
        if slow:
            self.counts["slow"] += 1
        kind: str | None = None
        edge = 0.0
        for name, rate in (
            ("error", c.error_rate),
            ("throttle", c.throttle_rate),
            ("drop", c.drop_rate),
            ("lost", c.lost_response_rate if operation == "UpdateImageSetMetadata" else 0.0),
        ):
            edge += rate
            if r < edge:
                kind = name
                break
        if kind is not None:
            self.counts[kind] += 1
        return Fault(kind, delay)
