"""Member processes for driver tests, and checks on what they saw.

Each Member is a `tests/cluster_member.py` process started by the test and
stopped by its pid; a reader thread collects the JSON lines it prints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import logcheck

HERE = Path(__file__).parent
ROOT = HERE.parent
WAIT = 30.0  # generous: two shared cores, several colleagues


class Member:
    def __init__(self, spec: str, port: int, msgs: int = 0, wait_members: int = 1) -> None:
        self.spec, self.port = spec, port
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "cluster_member.py"), spec, str(port),
             "--msgs", str(msgs), "--wait-members", str(wait_members)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
        )
        self.lines: list[dict[str, Any]] = []
        self.stderr = b""
        self.checked = False
        self._lock = threading.Lock()
        self._readers = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._readers:
            t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed at EOF: the member exited
            for raw in self.proc.stdout:
                with self._lock:
                    self.lines.append(json.loads(raw))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr:
            self.stderr = self.proc.stderr.read()

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.lines if "seq" in e]

    def messages(self) -> list[str]:
        return [e["payload"] for e in self.events if e["ev"] == "msg"]

    def lefts(self, port: int) -> list[dict[str, Any]]:
        return [e for e in self.events if e["ev"] == "left" and e["node"] == port]

    def members(self) -> list[int]:
        ms = [e["members"] for e in self.events if e["ev"] != "msg"]
        return ms[-1] if ms else []

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM (a clean leave), then SIGKILL if it lingers; then wait
        for the readers to see EOF, so every event it printed is in."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()
        for t in self._readers:
            t.join(timeout=15)
        if not self.checked:  # its log records: logging's "LEVEL:name:message" on stderr
            self.checked = True
            logcheck.check_text(self.stderr.decode(errors="replace"), logcheck.MEMBER_STDERR,
                                f"cluster member {self.port}'s stderr")

    def __repr__(self) -> str:
        return f"Member({self.port}, rc={self.proc.poll()}, err={self.stderr[-2000:]!r})"


def start(started: list[Member], spec: str, port: int, **kw: int) -> Member:
    """Start a member and record it in `started` (the `spawn` fixture's
    list), so the test's teardown stops it."""
    m = Member(spec, port, **kw)
    started.append(m)
    return m


def stop_all(started: list[Member]) -> None:
    for m in started:
        m.stop()


def wait_until(pred: Callable[[], bool], what: str, timeout: float = WAIT,
               members: list[Member] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        for m in members or []:
            if m.proc.poll() is not None and m.proc.returncode not in (0, -9):
                raise AssertionError(f"{m} exited while waiting for {what}")
        time.sleep(0.05)
    seen = {m.port: m.events[-30:] for m in members or []}
    raise AssertionError(f"timed out waiting for {what}: {members}; last events: {seen}")


def check_same_order(members: list[Member]) -> None:
    """Every member saw contiguous seqs from its own join, and where two
    members saw the same seq they saw the same event."""
    by_seq: dict[int, dict[str, Any]] = {}
    for m in members:
        evs = m.events
        assert evs and evs[0]["ev"] == "joined" and evs[0]["node"] == m.port, (m, evs[:3])
        seqs = [e["seq"] for e in evs]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (m, seqs)
        for e in evs:
            seen = by_seq.setdefault(e["seq"], e)
            assert seen == e, (m, seen, e)
