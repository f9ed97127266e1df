"""`tanji demo` in a process of its own, as the README starts it: for the tests that drive the
real demo through its public HTTP API or a browser.

One class for all of them: the process runs in a session of its own (so a stop takes its
simulators and gateways along), keeps its work directory across restarts (a restart serves the
same state), writes one log per start, and counts as started when its banner's last line (the
write token, printed once both ports serve) is out and the ports answer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 240


class DemoProcess:
    """`python -m tanji demo` on fixed ports and a work directory kept across restarts."""

    def __init__(self, workdir: Path, *extra_args: str, duration_s: int = 900) -> None:
        self.workdir = workdir
        self.extra_args = extra_args
        self.duration_s = duration_s
        self.http_port, self.https_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def log(self) -> Path:
        """This start's log (earlier starts keep theirs: demo-1.log, demo-2.log, …)."""
        return self.workdir / f"demo-{self.starts}.log"

    def start(self) -> None:
        """Start and wait for the banner and the ports; a demo that dies meanwhile fails with its log."""
        self.starts += 1
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tanji", "demo", "--http-port", str(self.http_port), "--https-port",
                 str(self.https_port), "--duration", str(self.duration_s), "--workdir", str(self.workdir / "data"),
                 *self.extra_args],
                cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + START_TIMEOUT_S
        while "write token" not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, f"the demo did not announce itself within {START_TIMEOUT_S} s"
            time.sleep(0.2)
        wait_for_port(self.http_port, timeout_s=30)
        wait_for_port(self.https_port, timeout_s=30)

    def stop(self) -> None:
        """SIGTERM to the demo's whole process group; SIGKILL if it is not gone in two minutes."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
