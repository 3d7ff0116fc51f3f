"""Rendering a :class:`~conformance._results.Report`: terminal table, JSON and JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from conformance._registry import GROUPS, CheckLevel
from conformance._results import Outcome, Report, Result

__all__ = ["print_report", "to_json", "to_junit_xml"]

_STYLE = {
    Outcome.PASS: "green",
    Outcome.FAIL: "bold red",
    Outcome.WARN: "yellow",
    Outcome.SKIP: "dim",
}


def _table(report: Report) -> Table:
    table = Table(title=f"HealthImaging conformance: {report.endpoint}", title_justify="left", expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("level", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("what", ratio=3)
    table.add_column("detail", ratio=2)
    for gid, results in report.by_group():
        table.add_section()
        table.add_row(Text(gid, style="bold"), "", "", Text(GROUPS[gid], style="bold"), "")
        for r in results:
            table.add_row(
                r.check.id,
                r.check.level.value,
                Text(r.outcome.value.upper(), style=_STYLE[r.outcome]),
                r.check.description,
                r.message,
            )
    return table


def _print_failures(console: Console, r: Result) -> None:
    style = "red" if r.outcome is Outcome.FAIL else "yellow"
    console.rule(
        Text(f"{r.check.id} {r.outcome.value.upper()}: {r.check.description}", style=style), align="left"
    )
    # soft wrap: curl commands stay on one line, ready to copy
    for f in r.failures:
        console.print(Text(f"- {f.message}", style="bold"), soft_wrap=True)
        for line, look in ((f.request, ""), (f.curl, "cyan"), (f.response, "dim")):
            if line:
                console.print(Text(line, style=look), soft_wrap=True)
    for n in r.notes:
        console.print(Text(f"note: {n}", style="dim"), soft_wrap=True)


def print_report(report: Report, console: Console | None = None, *, details: bool = True) -> None:
    """Print the grouped table, then each failure with its curl reproduction, then the summary.

    Args:
        report: the run's report.
        console: where to print (a rich Console on stdout by default).
        details: also print failure details and notes.
    """
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=140)
    if report.unreachable is not None and not report.results:
        console.print(Text(f"UNREACHABLE: {report.unreachable}; no check was run", style="bold red"))
        return
    console.print(_table(report))
    if details:
        for r in report.results:
            if r.outcome in (Outcome.FAIL, Outcome.WARN):
                _print_failures(console, r)
        for note in report.notes:
            console.print(Text(f"note: {note}", style="dim"))
    if report.restore is not None:
        style = "green" if report.restore.ok else "bold white on red"
        console.print(Text(f"image set: {report.restore.message}", style=style))
    if report.unreachable is not None:
        console.print(Text(f"UNREACHABLE: {report.unreachable}", style="bold red"))
    c = report.counts()
    must_failed = sum(
        1 for r in report.results if r.outcome is Outcome.FAIL and r.check.level is CheckLevel.MUST
    )
    verdict = (
        Text(f"{must_failed} MUST check(s) failed", style="bold red")
        if must_failed
        else Text("every MUST check passed", style="bold green")
    )
    summary = Text(
        f"{len(report.results)} checks: {c['pass']} pass, {c['fail']} fail, {c['warn']} warn, "
        f"{c['skip']} skip "
        f"in {report.seconds:.1f} s; "
    )
    summary.append(verdict)
    console.print(summary)


def to_json(report: Report, fp: IO[str] | None = None) -> str:
    """The report as JSON (written to ``fp`` too when given)."""
    text = json.dumps(report.to_dict(), indent=2)
    if fp is not None:
        fp.write(text + "\n")
    return text


def to_junit_xml(report: Report) -> str:
    """The report as JUnit XML: one testsuite per group, one testcase per check.

    A failed MUST is a ``<failure>``, a skip ``<skipped>``; a failed SHOULD
    passes with its warning in ``<system-out>`` and an ``outcome`` property,
    so CI fails exactly when the suite's exit status does.
    """
    root = ET.Element("testsuites", name="healthimaging-conformance", time=f"{report.seconds:.3f}")
    if report.unreachable is not None:
        suite = ET.SubElement(root, "testsuite", name="preflight", tests="1", failures="0", errors="1")
        case = ET.SubElement(suite, "testcase", classname="conformance", name="the endpoint answers")
        ET.SubElement(case, "error", message=report.unreachable, type="unreachable")
    for gid, results in report.by_group():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"{gid} {GROUPS[gid]}",
            tests=str(len(results)),
            failures=str(sum(r.outcome is Outcome.FAIL for r in results)),
            skipped=str(sum(r.outcome is Outcome.SKIP for r in results)),
            errors="0",
            time=f"{sum(r.seconds for r in results):.3f}",
        )
        for r in results:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"conformance.{gid}",
                name=f"{r.check.id} {r.check.description}",
                time=f"{r.seconds:.3f}",
            )
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name="level", value=r.check.level.value)
            ET.SubElement(props, "property", name="outcome", value=r.outcome.value)
            detail = "\n\n".join(
                "\n".join(x for x in (f.message, f.request, f.curl, f.response) if x) for f in r.failures
            )
            if r.outcome is Outcome.FAIL:
                failure = ET.SubElement(case, "failure", message=r.message, type="MUST")
                failure.text = detail
            elif r.outcome is Outcome.SKIP:
                ET.SubElement(case, "skipped", message=r.message)
            elif r.outcome is Outcome.WARN:
                out = ET.SubElement(case, "system-out")
                out.text = f"WARN (SHOULD): {r.message}\n\n{detail}"
    if report.restore is not None:
        root.set("restore", ("ok: " if report.restore.ok else "FAILED: ") + report.restore.message)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
