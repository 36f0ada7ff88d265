"""Twenty sheep on one machine with a real ZooKeeper (issue 19): the
20-node run of bench/bench_scale.py. It starts them, formats copies=3,
writes VDIs from several gateways, kills a node with -9, brings it
back, adds one more, and reads every VDI back; its figures (join times,
kill to new epoch, recovery moved over ideal, idle CPU and RSS per node)
go to the run's "reported by tests" section. Only that it ran to the end
with every byte back is checked: the figures are the benchmark's."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_twenty_nodes(tmp_path: Path, report_line: Callable[[str], None]) -> None:
    from zk import missing

    why = missing()
    if why is not None:
        pytest.skip(f"no ZooKeeper: {why}")
    env = {**os.environ, "BENCH_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_scale.py"), "--nodes", "20",
                           "--vdis", "3", "--vdi-mib", "12", "--kill", "1", "--add", "1",
                           "--placement", "straw2", "--idle-seconds", "3",
                           "--storm-seconds", "3"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ")]
    for line in lines:
        report_line(line)
    assert "every VDI read back the same (3)" in lines, done.stdout
    assert any(line.startswith("kill -9 to the new epoch") for line in lines), done.stdout
    storm = [line for line in lines if line.startswith("request storm")]
    assert storm and storm[0].endswith("still serving"), done.stdout
