"""Many hosts for real: five sheep hosts and three ZooKeeper hosts made of
network namespaces (tests/mh_cluster.py), clients writing and reading
4 KiB blocks through the native protocol and NBD, and a short fault
schedule checked Jepsen-style (tests/mh_run.py, tests/mh_history.py):

- `zone`: one sheep host split off from the other sheep and from
  ZooKeeper, while the test's clients still reach it: once the others
  have expelled it, it must serve nothing (it held the stale copies a
  read would have returned, and wrote with the hosts cut off with it);
- `minority:4`: four of the five split off: the one sheep left with
  ZooKeeper has a single zone and must halt, the four must serve nothing,
  and when healed the cluster resumes by itself and has lost nothing
  (before the fix, the four deleted every object they held on rejoining:
  the only copies of the objects whose three owners they were).

After the heal: no acknowledged write lost, every read the last
acknowledged write or one in flight, no object written on both sides of
a split, every object's copies identical on its owners' disks.

Replay or widen: SHEEPBLK_MH_SEED=7,8 (default 1); every schedule, more
rounds: scripts/multihost_check.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import mh_cluster
import mh_run
import pytest

pytestmark = pytest.mark.skipif(mh_cluster.missing() is not None,
                                reason=f"no multi-host tests here: {mh_cluster.missing()}")

SEEDS = [int(s) for s in os.environ.get("SHEEPBLK_MH_SEED", "1").split(",")]
SHORT = ["zone", "minority:4"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.expected_errors(
    # nbdkit's plugin reports an NBD request the cluster failed (a sheep
    # halted below its safe minimum answers HALT)
    r"nbdkit: python\.\d+: error: ")
def test_short_schedule(tmp_path: Path, seed: int) -> None:
    out = mh_run.run(tmp_path, seed, SHORT)
    print(out.text())
    assert not out.anomalies, (f"{out.text()}\nreplay: SHEEPBLK_MH_SEED={seed} .venv/bin/pytest "
                               f"{Path(__file__).name}; the run's files: {tmp_path}")
    assert out.report.acked > 0 and out.report.reads > 0
