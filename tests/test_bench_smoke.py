"""Every benchmark in bench/ runs to its table at a toy size.

Why: benchmarks are run by hand, so nothing else notices when one stops
working. Only that each finishes and prints its ratios is checked; the
figures at this size mean nothing and no timing is asserted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A ratio as the tables print it: "0.42x", or a number in bench_nbd's columns.
RATIO = re.compile(r"\d+\.\d\dx")
NBD_ROW = re.compile(r"rand write 4K\s+IOPS\s+\d+\s+\d+\s+\d+\s+\d+\s+\d+\.\d\d")
# bench_metrics' rows: IOPS off, on, and their ratio.
METRICS_ROW = re.compile(r"rand write 4K\s+\d+\s+\d+\s+\d+\.\d{3}")

RUNS = {
    "core": ["bench_core.py", "--size-mib", "8"],
    "cluster": ["bench_cluster.py", "--size-mib", "8"],
    "nbd": ["bench_nbd.py", "--size-mib", "8", "--runtime", "1"],
    "sheepfs": ["bench_sheepfs.py", "--size-mib", "8"],
    "farm": ["bench_farm.py", "--size", "16", "--src", str(ROOT / "sheepblk" / "proto")],
    "durability": ["bench_durability.py", "--size-mib", "8", "--runtime", "1"],
    # ZooKeeper's side is the driver tests' business: its JVM would double this run
    "drivers": ["bench_drivers.py", "--vdis", "3", "--drivers", "local,corosync"],
    "ring": ["bench_ring.py", "--nodes", "10,50", "--sample", "1000"],
    "metrics": ["bench_metrics.py", "--size-mib", "8", "--runtime", "1", "--rounds", "1"],
}
SHOWS = {"nbd": NBD_ROW, "metrics": METRICS_ROW}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_bench_runs(name: str, tmp_path: Path) -> None:
    script, *args = RUNS[name]
    env = {**os.environ, "BENCH_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], env=env,
                          cwd=ROOT, capture_output=True, timeout=600)
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, out + done.stderr.decode(errors="replace")
    assert SHOWS.get(name, RATIO).search(out), out
    assert list(tmp_path.iterdir()) == [], "the benchmark left files behind"
