"""Shared helpers for benchmarks: start our daemons, time commands, print ratios.

Benchmarks print ratios against a baseline measured in the same run on the
same disk, because absolute figures on these machines are noisy.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def tool(name: str) -> str:
    p = BIN / name
    return str(p) if p.exists() else name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


@contextmanager
def workdir(prefix: str = "sheepblk-bench-") -> Iterator[Path]:
    """A scratch directory on the project's disk (not tmpfs), removed after."""
    base = os.environ.get("BENCH_DIR", str(ROOT / ".bench"))
    Path(base).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=base) as d:
        yield Path(d)


@contextmanager
def sheep_cluster(tmp: Path, nodes: int = 1, copies: int | str = 1,
                  extra: list[str] | None = None,
                  stop_timeout: float = 15.0, cluster: str | None = None,
                  procs: list[subprocess.Popen[bytes]] | None = None) -> Iterator[list[int]]:
    """Start `nodes` sheep (zones 0..n-1), format, yield ports. `cluster`:
    their -c (default: the local driver on a file in tmp). Each node logs
    to tmp/sheepN.err; `stop_timeout`: how long a node may take to flush
    and exit before it is killed. `procs`, if given, gets the processes."""
    procs = [] if procs is None else procs
    ports = []
    shm = tmp / "shm"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        for i in range(nodes):
            port = free_port()
            args = [tool("sheep"), "-f", "-p", str(port), "-c", cluster or f"local:{shm}",
                    "-z", str(i), *(extra or []), str(tmp / f"store{i}")]
            with open(tmp / f"sheep{i}.err", "wb") as err:
                procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err))
            wait_port(port)
            ports.append(port)
        if nodes > 1:
            wait_members(ports[0], nodes)
        subprocess.run([tool("dog"), "cluster", "format", f"--copies={copies}",
                        "-p", str(ports[0])], check=True, capture_output=True)
        yield ports
    finally:
        stop_processes(procs, stop_timeout)


def wait_members(port: int, n: int, timeout: float = 60.0) -> None:
    """Until the node on `port` counts `n` members."""
    from sheepblk.client import SheepClient

    deadline = time.monotonic() + timeout
    while True:
        with SheepClient("127.0.0.1", port, pool_size=1) as c:
            if len(c.node_list()) == n:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the node on {port} has not seen {n} members")
        time.sleep(0.1)


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM every process we started, then SIGKILL what did not exit."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def random_file(path: Path, size: int, chunk: int = 4 << 20) -> Path:
    """`size` bytes of random data (incompressible, so no backend cheats)."""
    with open(path, "wb") as f:
        for off in range(0, size, chunk):
            f.write(os.urandom(min(chunk, size - off)))
    return path


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def drop_caches() -> None:
    """Best effort: make reads come from disk for the baseline and for us alike."""
    try:
        subprocess.run(["sync"], check=False)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def print_table(title: str, rows: list[tuple[str, float, float]], unit: str = "MB/s") -> None:
    """rows: (label, ours, baseline); prints ours/baseline ratios."""
    print(f"\n{title}")
    print(f"{'what':44} {'ours':>10} {'baseline':>10} {'ratio':>7}")
    for label, ours, base in rows:
        ratio = ours / base if base else float("nan")
        print(f"{label:44} {ours:10.1f} {base:10.1f} {ratio:7.2f}x")
    print(f"({unit})")


@contextmanager
def profiler(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy flame graph of `pid` while the block runs, written to `out`;
    nothing when `out` is None or py-spy is not installed."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if out is None or not os.path.exists(spy):
        yield
        return
    proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--output", str(out),
                             "--threads", "--nonblocking", "--rate", "200"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
