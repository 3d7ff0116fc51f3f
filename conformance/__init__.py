"""Check any endpoint against the AWS HealthImaging UpdateImageSetMetadata contract.

``run_conformance(target)`` runs the checklist's checks (request validation,
success and error shapes, optimistic concurrency, versions, authentication,
protocol details, robustness) with raw SigV4-signed requests and returns a
:class:`Report`; ``async-hi conformance`` and the pytest plugin
(``pytest --hi-endpoint URL``) are front ends to it.
"""

from conformance._http import Credentials
from conformance._pacing import NoPacing, Pacer
from conformance._registry import GROUPS, Check, CheckLevel, all_checks, select_checks
from conformance._results import Failure, Outcome, Report, Restore, Result
from conformance._runner import run_conformance
from conformance._target import Settings, Target, emulator_target, parse_expectation

__all__ = [
    "GROUPS",
    "Check",
    "CheckLevel",
    "Credentials",
    "Failure",
    "NoPacing",
    "Outcome",
    "Pacer",
    "Report",
    "Restore",
    "Result",
    "Settings",
    "Target",
    "all_checks",
    "emulator_target",
    "parse_expectation",
    "run_conformance",
    "select_checks",
]
