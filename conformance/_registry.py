"""Checks as data: id, level, group, description; the registry and selection by id or group."""

from __future__ import annotations

import enum
import importlib
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conformance._context import Context

__all__ = [
    "CHECK_MODULES",
    "GROUPS",
    "Check",
    "CheckLevel",
    "Phase",
    "all_checks",
    "check",
    "order_key",
    "select_checks",
]

GROUPS: dict[str, str] = {
    "RV": "request validation",
    "SR": "success response shape",
    "ER": "error response shape",
    "OC": "optimistic concurrency",
    "VS": "versions and effects",
    "AU": "authentication",
    "PD": "protocol details",
    "RB": "robustness",
}
"""Check group id -> title (the checklist's sections)."""
_ID = re.compile(r"(RV|SR|ER|OC|VS|AU|PD|RB)[0-9]{2}")


class CheckLevel(str, enum.Enum):
    """MUST fails the run; SHOULD is reported as a warning."""

    MUST = "MUST"
    SHOULD = "SHOULD"


class Phase(enum.IntEnum):
    """When a check runs.

    ``PROBE``: requests a conformant endpoint refuses (nothing changes);
    ``WRITE``: accepted writes; ``REVIEW``: reads over what the writes made
    (versions, pages, state); ``JUDGE``: last, over every exchange the run saw.
    """

    PROBE = 0
    WRITE = 1
    REVIEW = 2
    JUDGE = 3


CheckFunc = Callable[["Context"], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One conformance check.

    Args:
        id: ``RV01``-style id (group + two digits).
        level: MUST or SHOULD.
        description: one line: the request and the expected answer.
        run: the coroutine function doing it.
        writes: needs accepted writes on the image set (skipped without them).
        phase: run order (see :class:`Phase`).
    """

    id: str
    level: CheckLevel
    description: str
    run: CheckFunc = field(repr=False, compare=False)
    writes: bool = False
    phase: Phase = Phase.PROBE

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ValueError(f"Check.id must look like RV01 (a known group and two digits), got {self.id!r}")
        if not self.description or "\n" in self.description:
            raise ValueError(f"Check.description of {self.id} must be one non-empty line")

    @property
    def group(self) -> str:
        """The check's group id, the first two letters of its id (``RV``, ``OC``...)."""
        return self.id[:2]


_REGISTRY: dict[str, Check] = {}

#: The modules holding the checks, listed as pytest lists its plugins: importing one registers its checks.
#: Listed here (not imported by ``conformance._checks``) so the registry never imports through a package
#: whose modules import the registry back.
CHECK_MODULES: tuple[str, ...] = (
    "conformance._checks._rv",
    "conformance._checks._sr",
    "conformance._checks._er",
    "conformance._checks._oc",
    "conformance._checks._refusals",
    "conformance._checks._vs",
    "conformance._checks._au",
    "conformance._checks._pd",
    "conformance._checks._rb",
    "conformance._checks._generated",
)


def check(
    id: str, level: CheckLevel, description: str, *, writes: bool = False, phase: Phase | None = None
) -> Callable[[CheckFunc], CheckFunc]:
    """Register the decorated coroutine function as check ``id``."""

    def register(fn: CheckFunc) -> CheckFunc:
        if id in _REGISTRY:
            raise ValueError(f"check {id} is registered twice")
        chosen = phase if phase is not None else (Phase.WRITE if writes else Phase.PROBE)
        _REGISTRY[id] = Check(
            id=id, level=level, description=description, run=fn, writes=writes, phase=chosen
        )
        return fn

    return register


def all_checks() -> tuple[Check, ...]:
    """Every check, in the checklist's order (by group, then id)."""
    for name in CHECK_MODULES:
        importlib.import_module(name)
    return tuple(sorted(_REGISTRY.values(), key=order_key))


def order_key(c: Check) -> tuple[int, str]:
    """Sort key: the checklist's group order, then the id."""
    return list(GROUPS).index(c.group), c.id


def _expand(tokens: Iterable[str], known: dict[str, Check]) -> set[str]:
    out: set[str] = set()
    for raw in tokens:
        for token in raw.replace(",", " ").split():
            token = token.strip().upper()
            if token in GROUPS:
                out.update(k for k in known if k.startswith(token))
            elif token in known:
                out.add(token)
            else:
                raise ValueError(
                    f"unknown check or group {token!r}; groups are {', '.join(GROUPS)}, ids like RV01"
                )
    return out


def select_checks(select: Iterable[str] = (), skip: Iterable[str] = ()) -> tuple[Check, ...]:
    """The checks to run: those named in ``select`` (ids or groups; all when empty) minus ``skip``.

    Raises:
        ValueError: a token is neither a known id nor a group.
    """
    checks = all_checks()
    known = {c.id: c for c in checks}
    chosen = _expand(select, known) if any(s.strip() for s in select) else set(known)
    chosen -= _expand(skip, known)
    return tuple(c for c in checks if c.id in chosen)
