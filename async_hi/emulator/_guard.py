"""The emulator's defences against bad HTTP: AWS-shaped 400s and bounded, non-blocking logs.

- **Protocol errors.** A request aiohttp cannot parse (a bad request line,
  an over-long or invalid header, broken body framing) is answered in the AWS
  error wire format: a JSON ``{"message"}`` body with ``x-amzn-ErrorType:
  BadRequestException`` and an ``x-amzn-RequestId``, never aiohttp's plain-text
  400 that quotes the raw request bytes back. The message names the parser's
  error class only. (Our choice: the real service's front door is not
  documented for malformed HTTP; ``BadRequestException`` is a 400 code of the
  HealthImaging model.) An exception escaping a handler (a bug) is an
  ``InternalServerException`` 500 the same way.
- **Logs.** :class:`LogGuard`, a filter on the emulator's and aiohttp's
  loggers, caps every record (message and traceback) and rate-limits them with
  a token bucket, counting what it drops; so a flood of bad requests writes a
  few kilobytes, not a copy of every request.
- **A stderr nobody reads.** :class:`NonBlockingHandler` hands records to a
  bounded queue drained by a daemon thread; when the output blocks (a pipe
  nobody reads) the queue fills and records are dropped, and the event loop
  never waits on a write. ``async-hi emulator`` logs through it.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import IO

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

__all__ = ["GuardedAppRunner", "LogGuard", "NonBlockingHandler", "install_log_guard"]

#: loggers the guard is attached to
GUARDED_LOGGERS = ("async_hi.emulator", "aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal")
log = logging.getLogger("async_hi.emulator")


class LogGuard(logging.Filter):
    """Caps and rate-limits log records (a token bucket of ``burst`` records refilled at ``rate``/s).

    Args:
        max_message: characters of a formatted message kept.
        max_traceback: characters of a traceback kept.
        rate: records per second let through on average.
        burst: records let through at once.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        max_message: int = 500,
        max_traceback: int = 4000,
        rate: float = 2.0,
        burst: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.max_message = max_message
        self.max_traceback = max_traceback
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            now = self.clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                self.dropped += 1
                return False
            self._tokens -= 1
            dropped, self.dropped = self.dropped, 0
        message = _cap(record.getMessage(), self.max_message)
        if dropped:
            message += f" ({dropped} earlier log record(s) dropped by the rate limit)"
        record.msg, record.args = message, None
        if record.exc_info:
            record.exc_text = _cap(logging.Formatter().formatException(record.exc_info), self.max_traceback)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = _cap(record.exc_text, self.max_traceback)
        return True


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters cut)"


_GUARD: LogGuard | None = None


def install_log_guard() -> LogGuard:
    """Attach one shared :class:`LogGuard` to the emulator's and aiohttp's loggers (idempotent)."""
    global _GUARD
    if _GUARD is None:
        _GUARD = LogGuard()
        for name in GUARDED_LOGGERS:
            logging.getLogger(name).addFilter(_GUARD)
    return _GUARD


class NonBlockingHandler(logging.Handler):
    """Writes records to ``stream`` from a daemon thread through a bounded queue; drops when full.

    Args:
        stream: where to write (default: stderr at the time of each write).
        capacity: records queued at most.
    """

    def __init__(self, stream: IO[str] | None = None, *, capacity: int = 1000) -> None:
        super().__init__()
        self.stream = stream
        self.dropped = 0
        self._queue: queue.Queue[str] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._drain, name="async-hi-log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:  # a record that cannot be formatted is not worth a traceback on stderr
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def _drain(self) -> None:
        while True:
            line = self._queue.get()
            stream = self.stream or sys.stderr
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):  # closed or broken: nothing more can be said
                self.dropped += 1


# -- protocol errors in the AWS wire format ------------------------------------------------


class _GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors the AWS way (see the module docstring)."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        from async_hi.emulator._app import error_response

        what = type(exc).__name__ if exc is not None else f"HTTP {status}"
        if request.writer.output_size > 0:  # an answer is under way already: the connection is broken
            raise ConnectionError("a response was already being sent")
        rid = str(uuid.uuid4())
        if status < 500:
            log.warning("malformed HTTP request from %s (%s): answered 400", request.remote, what)
            response = error_response("BadRequestException", f"malformed HTTP request ({what})", rid)
        else:
            log.error("internal error answering a request from %s (%s)", request.remote, what, exc_info=exc)
            response = error_response("InternalServerException", "internal error", rid)
            response.set_status(status)
        response.force_close()
        return response


class _GuardedServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer protocol errors in the AWS wire format."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        if type(server) is web.Server:
            server.__class__ = _GuardedServer  # the same object: only __call__ differs
        return server
