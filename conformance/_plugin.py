"""pytest plugin: ``pytest --hi-endpoint URL ...`` (or ``--hi-emulator``) runs the conformance checks.

Registered as a ``pytest11`` entry point, so it is active wherever async-hi is
installed; without ``--hi-endpoint`` or ``--hi-emulator`` it adds nothing.
Each selected check becomes one test item named by its id (``-k RV`` works);
the whole suite runs once, on the first item, because checks share the image
set and the error review sees every exchange. A failed MUST check fails its
item with the violations and curl reproductions; a failed SHOULD check
passes with a warning in the summary unless ``--hi-strict``.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
import pytest

from conformance._http import Credentials
from conformance._registry import Check, select_checks
from conformance._report import to_json
from conformance._results import Outcome, Report, Result
from conformance._runner import run_conformance
from conformance._target import Settings, Target, emulator_target, parse_expectation

__all__ = ["ConformanceItem"]

_REPORT_KEY = pytest.StashKey["_Suite"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hi-conformance", "AWS HealthImaging conformance (async-hi)")
    g.addoption("--hi-endpoint", metavar="URL", help="check this HealthImaging endpoint")
    g.addoption("--hi-emulator", action="store_true", help="check async-hi's emulator, started in-process")
    g.addoption("--hi-region", default=None, help="signing region (default AWS_REGION)")
    g.addoption("--hi-datastore-id", default=None)
    g.addoption("--hi-image-set-id", default=None)
    g.addoption("--hi-allow-writes", action="store_true", help="allow accepted updates (reverted afterwards)")
    g.addoption("--hi-select", action="append", default=[], metavar="IDS", help="check ids or groups")
    g.addoption("--hi-skip", action="append", default=[], metavar="IDS", help="check ids or groups to skip")
    g.addoption("--hi-expect", action="append", default=[], metavar="ID=STATUS", help="e.g. RV01=404")
    g.addoption("--hi-time-bound", type=float, default=5.0, help="RB09 seconds per answer")
    g.addoption("--hi-examples", type=int, default=40, help="RB08 generated requests")
    g.addoption("--hi-strict", action="store_true", help="failed SHOULD checks fail their test too")
    g.addoption("--hi-json", metavar="PATH", default=None, help="also write the JSON report here")


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--hi-endpoint") or config.getoption("--hi-emulator"))


class _Suite:
    """Runs the suite once and keeps the report."""

    def __init__(self, config: pytest.Config, checks: tuple[Check, ...]) -> None:
        self.config = config
        self.checks = checks
        self._report: Report | None = None

    def settings(self) -> Settings:
        opt = self.config.getoption
        return Settings(
            time_bound=opt("--hi-time-bound"),
            examples=opt("--hi-examples"),
            expect=dict(parse_expectation(e) for e in opt("--hi-expect")),
        )

    def target(self) -> Target:
        opt = self.config.getoption
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        region = opt("--hi-region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not (key and secret and region):
            raise pytest.UsageError(
                "--hi-endpoint needs AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and a region"
            )
        if not (opt("--hi-datastore-id") and opt("--hi-image-set-id")):
            raise pytest.UsageError("--hi-endpoint needs --hi-datastore-id and --hi-image-set-id")
        return Target(
            endpoint_url=opt("--hi-endpoint"),
            credentials=Credentials(
                access_key_id=key,
                secret_access_key=secret,
                session_token=os.environ.get("AWS_SESSION_TOKEN"),
                region=region,
            ),
            datastore_id=opt("--hi-datastore-id"),
            image_set_id=opt("--hi-image-set-id"),
            allow_writes=opt("--hi-allow-writes"),
        )

    async def _run(self) -> Report:
        ids = [c.id for c in self.checks]
        if self.config.getoption("--hi-emulator"):
            async with emulator_target() as target:
                return await run_conformance(target, settings=self.settings(), select=ids)
        return await run_conformance(self.target(), settings=self.settings(), select=ids)

    def report(self) -> Report:
        if self._report is None:
            self._report = anyio.run(self._run)
            path = self.config.getoption("--hi-json")
            if path:
                with open(path, "w", encoding="utf-8") as fp:
                    to_json(self._report, fp)
        return self._report

    @property
    def done(self) -> Report | None:
        return self._report


class ConformanceFailed(Exception):
    def __init__(self, result: Result) -> None:
        super().__init__(result.message)
        self.result = result


def _explain(result: Result) -> str:
    lines = [f"{result.check.id} {result.check.level.value}: {result.check.description}", ""]
    for f in result.failures:
        lines.append(f"- {f.message}")
        lines += [f"  {x}" for x in (f.request, f.curl, f.response) if x]
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


class ConformanceItem(pytest.Item):
    """One conformance check as a test."""

    def __init__(self, *, check: Check, suite: _Suite, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.suite = suite

    def runtest(self) -> None:
        report = self.suite.report()
        if report.unreachable is not None and not report.results:
            # one message and the CLI's exit status, not a failure per check
            pytest.exit(f"UNREACHABLE: {report.unreachable}; no check was run", returncode=4)
        result = report.result(self.check.id)
        self.user_properties.append(("outcome", result.outcome.value))
        if result.outcome is Outcome.SKIP:
            pytest.skip(result.message)
        strict = self.config.getoption("--hi-strict")
        if result.outcome is Outcome.FAIL or (result.outcome is Outcome.WARN and strict):
            raise ConformanceFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ConformanceFailed):
            return _explain(excinfo.value.result)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"{self.check.id} [{self.check.level.value}] {self.check.description}"


class _Collector(pytest.Collector):
    def collect(self) -> list[pytest.Item]:  # pragma: no cover - items are made directly
        return []


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if not _enabled(config):
        return
    try:
        checks = select_checks(config.getoption("--hi-select"), config.getoption("--hi-skip"))
        for e in config.getoption("--hi-expect"):
            parse_expectation(e)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    suite = _Suite(config, checks)
    config.stash[_REPORT_KEY] = suite
    parent = _Collector.from_parent(session, name="hi-conformance", nodeid="hi-conformance")
    items.extend(
        ConformanceItem.from_parent(parent, name=c.id, nodeid=f"hi-conformance::{c.id}", check=c, suite=suite)
        for c in checks
    )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    suite = config.stash.get(_REPORT_KEY, None)
    report = suite.done if suite is not None else None
    if report is None:
        return
    warns = [r for r in report.results if r.outcome is Outcome.WARN]
    terminalreporter.section("HealthImaging conformance")
    for r in warns:
        terminalreporter.line(f"WARN {r.check.id} (SHOULD): {r.message}", yellow=True)
    if report.restore is not None:
        terminalreporter.line(
            f"image set: {report.restore.message}", red=not report.restore.ok, green=report.restore.ok
        )
    c = report.counts()
    terminalreporter.line(
        f"{c['pass']} pass, {c['fail']} fail, {c['warn']} warn, {c['skip']} skip against {report.endpoint} "
        f"in {report.seconds:.1f} s"
    )
