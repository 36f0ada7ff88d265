"""Erasure code 4:2 against copies=3, on six nodes, in one run:

    .venv/bin/python bench/bench_ec.py [--size-mib 512] [--runtime 10]

- `dog vdi write` and `dog vdi read` of SIZE: MB/s, 4:2 over copies=3;
- 4K random writes through NBD (fio, nbdkit with our plugin on the first
  node's unix socket): IOPS, 4:2 over copies=3;
- bytes stored on all nodes (the data objects' files, by allocated blocks)
  over bytes written: the goal is at most 1.6 for 4:2, 3.0 for copies=3;
- recovery after `kill -9` of one node: seconds from the kill until no node
  is in recovery.
The machine is shared and noisy: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_nbd import fio, nbdkit, plugin_args  # noqa: E402
from bench.common import random_file, sheep_cluster, timed, tool, workdir  # noqa: E402
from sheepblk.client import SheepClient  # noqa: E402

NODES = 6


def stored_bytes(tmp: Path) -> int:
    """Allocated bytes of every data object file on every node."""
    total = 0
    for i in range(NODES):
        for f in (tmp / f"store{i}" / "obj").iterdir():
            if f.is_file() and len(f.name) == 16 and not int(f.name, 16) >> 56:
                total += f.stat().st_blocks * 512
    return total


def in_recovery(ports: list[int]) -> bool:
    for port in ports:
        try:
            with SheepClient("127.0.0.1", port, pool_size=1) as c:
                if c.stat_recovery().in_recovery:
                    return True
        except OSError:
            continue
    return False


def sheep_pid(port: int) -> int:
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                         text=True).stdout
    return int(out.split("pid=")[1].split(",")[0])


def one(tmp: Path, src: Path, size: int, copies: str, runtime: int) -> dict[str, float]:
    dog = tool("dog")
    out: dict[str, float] = {}
    with sheep_cluster(tmp, NODES, copies) as ports:
        port = ports[0]
        subprocess.run([dog, "vdi", "create", "Alice", str(size), "-p", str(port)], check=True)
        out["write"] = size / 1e6 / timed(lambda: subprocess.run(
            f"{dog} vdi write Alice -p {port} < {src}", shell=True, check=True))
        out["read"] = size / 1e6 / timed(lambda: subprocess.run(
            f"{dog} vdi read Alice -p {port} > /dev/null", shell=True, check=True))
        out["stored"] = stored_bytes(tmp) / size
        subprocess.run([dog, "vdi", "create", "Bench", str(size), "-p", str(port)], check=True)
        if shutil.which("nbdkit") and shutil.which("fio"):
            with nbdkit(tmp / "nbd.sock", *plugin_args(tmp / "store0")):
                out["iops"] = fio(tmp / "nbd.sock", f"randwrite {copies}", "randwrite", "4k",
                                  size >> 20, runtime)["IOPS"]
        victim = ports[-1]
        os.kill(sheep_pid(victim), signal.SIGKILL)
        t0 = time.perf_counter()
        time.sleep(0.5)
        while in_recovery(ports[:-1]):
            time.sleep(0.1)
        out["recovery"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--runtime", type=int, default=10, help="seconds of fio randwrite")
    args = ap.parse_args()
    size = args.size_mib << 20
    with workdir() as tmp:
        src = random_file(tmp / "src", size)
        base = one(tmp / "c3", src, size, "3", args.runtime)
        ec = one(tmp / "ec", src, size, "4:2", args.runtime)
    print(f"\n6 nodes, {args.size_mib} MiB; 4:2 against copies=3 in the same run "
          "(a shared, noisy machine: read the ratios)")
    print(f"{'what':34} {'4:2':>10} {'copies=3':>10} {'ratio':>7}")
    for key, label in (("write", "dog vdi write MB/s"), ("read", "dog vdi read MB/s"),
                       ("iops", "NBD 4K randwrite IOPS"),
                       ("stored", "bytes stored / bytes written"),
                       ("recovery", "recovery after losing a node, s")):
        if key in ec and key in base:
            print(f"{label:34} {ec[key]:10.2f} {base[key]:10.2f} {ec[key] / base[key]:7.2f}x")


if __name__ == "__main__":
    main()
