"""The checks of the conformance checklist, one module per group (importing registers them)."""

from conformance._checks import (  # noqa: F401
    _au,
    _er,
    _generated,
    _oc,
    _pd,
    _rb,
    _rv,
    _sr,
    _vs,
)
