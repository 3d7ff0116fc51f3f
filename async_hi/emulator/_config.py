"""The emulator's configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from async_hi.contract import DEFAULT_QUOTAS, Quota
from async_hi.emulator._faults import FaultConfig

__all__ = ["DEFAULT_ACCESS_KEY_ID", "DEFAULT_SECRET_ACCESS_KEY", "EmulatorConfig"]

#: Well-known, obviously fake credentials the emulator accepts by default.
DEFAULT_ACCESS_KEY_ID = "AKIAASYNCHIEMULATOR1"
"""The access key id the emulator accepts unless configured otherwise (not an AWS credential)."""
DEFAULT_SECRET_ACCESS_KEY = "async-hi-emulator-secret-key-not-for-aws"
"""The secret key that goes with :data:`DEFAULT_ACCESS_KEY_ID`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorConfig:
    """How the emulator behaves. Keyword-only, validated at construction.

    Args:
        host: address to bind (loopback by default).
        port: port to bind; 0 picks a free one (read ``Emulator.endpoint_url``).
        region: the region it serves; SigV4 scopes must name it.
        account_id: the account in ARNs.
        credentials: access key id -> secret access key accepted for SigV4.
        verify_sigv4: check every AWS request's signature (403 when wrong).
        lock_seconds: how long an accepted update keeps the image set LOCKED.
        quotas: per-operation quotas answered with 429; None turns throttling off.
        faults: seeded fault injection (off by default).
        max_body_bytes: larger request bodies get 413 without being read.
    """

    host: str = "127.0.0.1"
    port: int = 0
    region: str = "us-east-1"
    account_id: str = "123456789012"
    credentials: Mapping[str, str] = field(
        default_factory=lambda: {DEFAULT_ACCESS_KEY_ID: DEFAULT_SECRET_ACCESS_KEY}
    )
    verify_sigv4: bool = True
    lock_seconds: float = 0.2
    quotas: Mapping[str, Quota] | None = field(default_factory=lambda: dict(DEFAULT_QUOTAS))
    faults: FaultConfig = field(default_factory=FaultConfig)
    max_body_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"EmulatorConfig.port must be within 0..65535, got {self.port!r}")
        if self.lock_seconds < 0:
            raise ValueError(f"EmulatorConfig.lock_seconds must be >= 0, got {self.lock_seconds!r}")
        if self.max_body_bytes < 64 * 1024:
            raise ValueError(
                "EmulatorConfig.max_body_bytes must be at least 65536 (an update body can be ~40 KB)"
            )
        if self.verify_sigv4 and not self.credentials:
            raise ValueError("EmulatorConfig.credentials must not be empty while verify_sigv4 is on")
        if self.quotas is not None:
            for op, q in self.quotas.items():
                if not isinstance(q, Quota):
                    raise ValueError(f"EmulatorConfig.quotas[{op!r}] must be a Quota, got {type(q).__name__}")

    @property
    def access_key_id(self) -> str:
        """The first configured access key id (what the CLI prints)."""
        return next(iter(self.credentials))

    @property
    def secret_access_key(self) -> str:
        """The secret key of :attr:`access_key_id`."""
        return self.credentials[self.access_key_id]
