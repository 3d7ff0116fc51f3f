"""The emulator in a child process (``python -m async_hi emulator --json``).

For benchmarks and crash tests, where the emulator must not share an event
loop (or a fate) with the code under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["EmulatorProcess"]


class EmulatorProcess:
    """Start ``async-hi emulator`` as a child process; read its endpoint, credentials and ids.

    Args:
        args: extra command-line arguments (for example ``["--no-throttle"]``).

    Attributes after ``__enter__``: ``info`` (the JSON line the command printed:
    endpoint_url, region, aws_access_key_id, aws_secret_access_key,
    datastore_id, image_set_ids).
    """

    def __init__(self, args: Sequence[str] = ()) -> None:
        self.args = list(args)
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> EmulatorProcess:
        cmd = [sys.executable, "-m", "async_hi", "emulator", "--json", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(timeout=30)
            raise RuntimeError(f"the emulator process exited with {code} before printing its endpoint")
        self.info = json.loads(line)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            finally:
                if self.proc.stdout is not None:
                    self.proc.stdout.close()

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the emulator in the child process."""
        return str(self.info["endpoint_url"])

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client("medical-imaging", ...)`` and friends."""
        return {
            "endpoint_url": self.info["endpoint_url"],
            "region_name": self.info["region"],
            "aws_access_key_id": self.info["aws_access_key_id"],
            "aws_secret_access_key": self.info["aws_secret_access_key"],
        }
