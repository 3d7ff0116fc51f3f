"""What every scenario shares: the row, the sizes, the emulator process, the machine note, the table.

A scenario is a module with ``NAME``, ``TITLE`` and ``run(mode) -> list[Row]``,
where ``mode`` is ``"tiny"`` (the smoke test), ``"quick"`` or ``"full"``.
Each row puts its headline ratio first (against the scenario's baseline, in
the same run), then its absolute figures; its ``series`` (JSON only) keep the
time series behind them for plots.

Contestants run in child processes (``benchmarks/_child.py``), each with a
fresh interpreter; :func:`run_child` runs one with the code under test
("after") or with the package as it was at :data:`BEFORE` ("before": our own
client before this round of work, extracted once with ``git archive`` into a
cache directory and put first on the child's ``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import multiprocessing
import multiprocessing.context
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import httpx

from async_hi.emulator import EmulatorProcess

Mode = Literal["tiny", "quick", "full"]
Code = Literal["after", "before"]
UPD = "UpdateImageSetMetadata"
GET = "GetImageSet"
ROOT = Path(__file__).resolve().parents[1]
#: "before": main at the start of the #12 work (our client as it was); ASYNC_HI_BENCH_BEFORE overrides
BEFORE = os.environ.get("ASYNC_HI_BENCH_BEFORE", "b08790e58bc3bf45ad31211e32188bc93cab3940")


@dataclass(slots=True, kw_only=True)
class Row:
    """One contestant of one scenario.

    Args:
        scenario: the scenario's name.
        client: who ran it, and how.
        ratio: the headline ratio (``ratio_of`` says of what); None when the row is a baseline
            or the scenario has no ratio.
        ratio_of: what the ratio is, e.g. ``"throughput / aiobotocore gather"``.
        target: the promised bound, e.g. ``">= 0.9"``; empty when none.
        met: whether the target is met (None: no target).
        figures: the absolute figures, in display order.
        note: why a target was missed, or what to know when reading the row.
        series: time series behind the figures (JSON only, for plots): e.g. ``sends``
            (``[seconds from the start, operation, HTTP status]`` per request the emulator
            saw), ``rate`` (``[seconds, tps]`` samples of the limiter's rate).
    """

    scenario: str
    client: str
    ratio: float | None = None
    ratio_of: str = ""
    target: str = ""
    met: bool | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    series: dict[str, Any] = field(default_factory=dict)


def pick(mode: Mode, tiny: Any, quick: Any, full: Any) -> Any:
    """The size for ``mode``."""
    return {"tiny": tiny, "quick": quick, "full": full}[mode]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):  # noqa: SIM115 (tiny read)
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ("aiobotocore", "botocore", "boto3", "aiohttp", "anyio"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "packages": versions,
    }


def machine_line(m: Mapping[str, Any]) -> str:
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    return f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['system']}; {pkgs}"


# -- the emulator in its own process ----------------------------------------------------------


class _LineSender:
    """A stand-in stdout for the emulator child: sends each printed line to the parent."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.buffer = ""

    def write(self, text: str) -> int:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            self.conn.send(line)
        return len(text)

    def flush(self) -> None:
        pass


def _serve(args: list[str], conn: Connection, alive: Connection) -> None:
    from async_hi.cli import main

    def watch() -> None:  # the parent died (or left) without stopping us: stop
        with contextlib.suppress(EOFError, OSError):
            alive.recv()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()
    sys.stdout = _LineSender(conn)  # type: ignore[assignment]
    main(["emulator", "--json", *args])


_CONTEXT: multiprocessing.context.ForkServerContext | None = None


def _context() -> multiprocessing.context.ForkServerContext:
    # a fork server with the emulator imported: a new emulator process in ~0.1 s instead of ~1.5 s
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["async_hi.cli", "async_hi.cli._emulator", "async_hi.emulator"])
    return _CONTEXT


class ForkedEmulator:
    """``async-hi emulator --json ARGS`` in a child process (its own event loop and core).

    The same as ``EmulatorProcess`` (``info``, ``endpoint_url``), forked from a
    fork server that has the package imported already.
    """

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.info: dict[str, Any] = {}

    def __enter__(self) -> ForkedEmulator:
        ctx = _context()
        receive, send = ctx.Pipe(duplex=False)
        alive_r, self._alive = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_serve, args=(self.args, send, alive_r), daemon=True)
        self.proc.start()
        send.close()
        alive_r.close()
        if not receive.poll(60):
            self.proc.kill()
            raise RuntimeError("the emulator process did not print its endpoint within 60 s")
        self.info = json.loads(receive.recv())
        receive.close()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.join(30)
        self._alive.close()

    @property
    def endpoint_url(self) -> str:
        return str(self.info["endpoint_url"])


@contextlib.contextmanager
def emulator(*args: str) -> Iterator[ForkedEmulator | EmulatorProcess]:
    """``async-hi emulator`` in a child process (its own event loop and core)."""
    if (
        os.environ.get("ASYNC_HI_BENCH_SUBPROCESS")
        or "forkserver" not in multiprocessing.get_all_start_methods()
    ):
        with EmulatorProcess(list(args)) as proc:
            yield proc
        return
    with ForkedEmulator(list(args)) as forked:
        yield forked


def client_kwargs(info: Mapping[str, Any]) -> dict[str, str]:
    """Keyword arguments for ``HealthImagingClient`` from the emulator's info line."""
    return {k: info[k] for k in ("endpoint_url", "region", "aws_access_key_id", "aws_secret_access_key")}


async def server_stats(endpoint_url: str) -> dict[str, int]:
    """Requests per "Operation status" the emulator saw (e.g. ``"UpdateImageSetMetadata 429"``)."""
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{endpoint_url}/_emulator/stats")
        r.raise_for_status()
        out: dict[str, int] = r.json()["requests"]
        return out


async def server_history(
    endpoint_url: str, datastore_id: str, image_set_id: str, *, http: httpx.AsyncClient | None = None
) -> list[dict[str, Any]]:
    """Every version of an image set, oldest first, with its metadata (the emulator's ground truth)."""
    url = f"{endpoint_url}/_emulator/datastores/{datastore_id}/imageSets/{image_set_id}/history"
    async with contextlib.AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(httpx.AsyncClient())
        r = await http.get(url)
        r.raise_for_status()
        out: list[dict[str, Any]] = r.json()["versions"]
        return out


async def settled_history(
    endpoint_url: str, datastore_id: str, image_set_id: str, *, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """``server_history`` once the latest version is applied (until then it shows the old content)."""
    deadline = time.monotonic() + timeout
    while True:
        versions = await server_history(endpoint_url, datastore_id, image_set_id)
        if not versions[-1]["workflowStatus"].startswith("UPDATING") or time.monotonic() > deadline:
            return versions
        await asyncio.sleep(0.02)


async def server_requests(endpoint_url: str) -> list[list[Any]]:
    """Every AWS request the emulator saw, in arrival order: ``[at, operation, status, code, image set,
    fault]`` (``at`` on the emulator's ``time.monotonic()``, the same clock as this process's)."""
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(f"{endpoint_url}/_emulator/requests")
        r.raise_for_status()
        out: list[list[Any]] = r.json()["requests"]
        return out


def sends(log: Sequence[Sequence[Any]], t0: float, operation: str | None = None) -> list[list[Any]]:
    """``[seconds from t0, operation, status]`` per request in ``log`` (of ``operation``, or all)."""
    return [[round(r[0] - t0, 6), r[1], r[2]] for r in log if operation is None or r[1] == operation]


def arrival_gaps(log: Sequence[Sequence[Any]], operation: str = UPD) -> list[float]:
    """Seconds between consecutive arrivals of ``operation`` (any status)."""
    times = [r[0] for r in log if r[1] == operation]
    return [b - a for a, b in itertools.pairwise(times)]


def count(stats: Mapping[str, int], operation: str, status: int | None = None) -> int:
    """Requests of ``operation`` (with ``status``, or all) in ``server_stats`` output."""
    return sum(
        v
        for k, v in stats.items()
        if k.split()[0] == operation and (status is None or k.endswith(f" {status}"))
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Timer:
    """Seconds since construction (monotonic)."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.start


def before_dir() -> Path | None:
    """A directory holding ``async_hi`` as it was at :data:`BEFORE` (cached); None if git cannot give it."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "async-hi-bench" / BEFORE[:12]
    if (cache / "async_hi" / "__init__.py").exists():
        return cache
    r = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", BEFORE, "async_hi"],
        capture_output=True,
        check=False,
    )
    if r.returncode != 0:
        return None
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent))
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
            tar.extractall(tmp, filter="data")
        else:  # our own git archive
            tar.extractall(tmp)
    try:
        tmp.rename(cache)
    except OSError:  # another run extracted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


def child_command(spec: Mapping[str, Any], code: Code = "after") -> tuple[list[str], dict[str, str], Path]:
    """The command, environment and working directory of one contestant's child process.

    With ``code="before"`` the child runs in the cached :data:`BEFORE` tree (first on ``sys.path``,
    so ``async_hi`` is the old one) with this checkout on ``PYTHONPATH`` (for ``benchmarks``).
    """
    env = dict(os.environ)
    cwd = ROOT
    if code == "before":
        old = before_dir()
        if old is None:
            raise RuntimeError(f"git cannot give commit {BEFORE[:12]} (a shallow clone?)")
        cwd = old
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return [sys.executable, "-m", "benchmarks._child", json.dumps(spec)], env, cwd


def run_child(spec: Mapping[str, Any], code: Code = "after", *, timeout: float = 900) -> dict[str, Any]:
    """Run one contestant (``benchmarks/_child.py``) in a fresh process; its JSON result."""
    cmd, env, cwd = child_command(spec, code)
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"benchmark child ({code}) failed: {r.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def run_async(coro: Any) -> Any:
    """Run one scenario coroutine on a fresh asyncio loop."""
    return asyncio.run(coro)


# -- the table --------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _met(row: Row) -> str:
    if row.met is None:
        return ""
    return "yes" if row.met else "**no**"


def table(rows: Sequence[Row]) -> str:
    """One Markdown table: ratio first, then the target, then the absolute figures."""
    lines = [
        "| scenario | client | ratio | of | target | met | figures |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.3f}"
        figures = ", ".join(f"{k} {_fmt(v)}" for k, v in r.figures.items())
        if r.note:
            figures = f"{figures}; {r.note}" if figures else r.note
        lines.append(
            f"| {r.scenario} | {r.client} | {ratio} | {r.ratio_of} | {r.target} | {_met(r)} | {figures} |"
        )
    return "\n".join(lines)


def to_json(rows: Sequence[Row], *, mode: str, seconds: float) -> str:
    return json.dumps(
        {"mode": mode, "seconds": seconds, "machine": machine(), "rows": [asdict(r) for r in rows]},
        indent=2,
        default=str,
    )


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
