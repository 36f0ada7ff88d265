"""What `sheep --metrics` costs: 4 KiB random IOPS with and without it.

    .venv/bin/python bench/bench_metrics.py [--size-mib 128] [--runtime 5] [--rounds 3]

Two one-node clusters (copies=1) on the same disk, one sheep started with
`--metrics` and scraped every second while fio runs (as a Prometheus server
would, at a far higher rate than its usual 15 s), the other without. fio
(ioengine=nbd, iodepth 16) runs random 4 KiB reads and writes against our
nbdkit plugin on each sheep's unix socket, rounds alternating between the
two so that the machine's noise falls on both alike. Prints each round's
IOPS, and the median ratio on/off per job.

The request counters themselves (stats.py) are kept whether or not the
endpoint is served (`dog node stat` reads them); their cost per request is
printed too, from a loop of RequestStats.record, beside the time one
request takes at the measured IOPS.

IOPS on a shared 2-core machine swing by tens of percent from one run to
the next, far more than what is measured here; so the sheep's own CPU time
(utime + stime from /proc) per request fio completed is printed as well: it
moves much less with other load, and it is what the counting and the
scrapes cost the sheep.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_nbd import fio, nbdkit, plugin_args  # noqa: E402
from bench.common import free_port, sheep_cluster, workdir  # noqa: E402
from sheepblk.client import SheepClient  # noqa: E402
from sheepblk.proto import Op, Res  # noqa: E402
from sheepblk.server.stats import RequestStats  # noqa: E402

JOBS = [("rand read 4K", "randread"), ("rand write 4K", "randwrite")]
SCRAPE_EVERY = 1.0


class Scraper:
    """Scrapes http://127.0.0.1:PORT/metrics every SCRAPE_EVERY seconds."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.stop = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(SCRAPE_EVERY):
            with urllib.request.urlopen(self.url, timeout=10) as rsp:
                rsp.read()
            self.count += 1

    def __enter__(self) -> Scraper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape_cost(port: int, pid: int, n: int = 100) -> float:
    """Sheep CPU seconds one scrape costs (n scrapes of an idle sheep)."""
    url = f"http://127.0.0.1:{port}/metrics"
    before = cpu_seconds(pid)
    for _ in range(n):
        with urllib.request.urlopen(url, timeout=10) as rsp:
            rsp.read()
    return (cpu_seconds(pid) - before) / n


def record_cost(n: int = 200_000) -> float:
    """Seconds RequestStats.record takes per request (a write_obj)."""
    stats = RequestStats()
    op, ok = int(Op.WRITE_OBJ), int(Res.SUCCESS)  # plain ints, as decoded from the wire
    t0 = time.perf_counter()
    for _ in range(n):
        stats.record(op, ok, 0.0004, 4096, 0)
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=128)
    ap.add_argument("--runtime", type=int, default=5, help="seconds per measured job")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    mport = free_port()
    iops: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}  # sheep CPU seconds per request
    scrapes = 0
    with workdir() as tmp:
        with sheep_cluster(tmp / "off", stop_timeout=30) as (off_port,), \
                sheep_cluster(tmp / "on", stop_timeout=30,
                              extra=["--metrics", f"127.0.0.1:{mport}"]) as (on_port,):
            for port in (off_port, on_port):
                with SheepClient("127.0.0.1", port) as c:
                    c.create_vdi("Bench", args.size_mib << 20)
            with nbdkit(tmp / "off.sock", *plugin_args(tmp / "off" / "store0")), \
                    nbdkit(tmp / "on.sock", *plugin_args(tmp / "on" / "store0")):
                for mode in ("off", "on"):
                    fio(tmp / f"{mode}.sock", "fill", "write", "4M", args.size_mib, None)
                pids = {mode: int((tmp / mode / "store0" / "sheep.pid").read_text())
                        for mode in ("off", "on")}
                for r in range(args.rounds):
                    for name, rw in JOBS:
                        # Alternate which goes first, so neither always follows the other.
                        for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
                            sock = tmp / f"{mode}.sock"
                            cpu0 = cpu_seconds(pids[mode])
                            if mode == "on":
                                with Scraper(mport) as s:
                                    got = fio(sock, name, rw, "4k", args.size_mib, args.runtime)
                                scrapes += s.count
                            else:
                                got = fio(sock, name, rw, "4k", args.size_mib, args.runtime)
                            used = cpu_seconds(pids[mode]) - cpu0
                            iops.setdefault((name, mode), []).append(got["IOPS"])
                            cpu.setdefault((name, mode), []).append(used / got["ios"])
                            print(f"  round {r + 1} {name:14} metrics {mode:3} "
                                  f"{got['IOPS']:9.0f} IOPS "
                                  f"{1e6 * used / got['ios']:6.1f} us sheep CPU/request",
                                  flush=True)
                scrape_cpu = scrape_cost(mport, pids["on"])
    per_request = record_cost()
    print(f"\n4K random IOPS, one sheep copies=1, fio over our NBD plugin (iodepth 16), "
          f"{args.rounds} rounds of {args.runtime} s; 'on': --metrics, scraped every "
          f"{SCRAPE_EVERY:g} s ({scrapes} scrapes)")
    print(f"{'job':15} {'off':>9} {'on':>9} {'on/off':>7}   (medians; per-round ratios)")
    for name, _ in JOBS:
        off, on = iops[(name, "off")], iops[(name, "on")]
        ratios = " ".join(f"{a / b:.3f}" for a, b in zip(on, off, strict=True))
        print(f"{name:15} {statistics.median(off):9.0f} {statistics.median(on):9.0f} "
              f"{statistics.median(on) / statistics.median(off):7.3f}   ({ratios})")
    print(f"\n{'job':15} {'off':>9} {'on':>9} {'on/off':>7}   sheep CPU us per request "
          "(medians; per-round ratios)")
    for name, _ in JOBS:
        off, on = cpu[(name, "off")], cpu[(name, "on")]
        ratios = " ".join(f"{a / b:.3f}" for a, b in zip(on, off, strict=True))
        print(f"{name:15} {1e6 * statistics.median(off):9.1f} {1e6 * statistics.median(on):9.1f} "
              f"{statistics.median(on) / statistics.median(off):7.3f}   ({ratios})")
    best = max(statistics.median(iops[(n, "off")]) for n, _ in JOBS)
    print(f"\ncounting one request (RequestStats.record): {per_request * 1e9:.0f} ns, "
          f"{100 * per_request * best:.2f}% of a request's time at {best:.0f} IOPS "
          "(one sheep thread)")
    print(f"one scrape: {scrape_cpu * 1e3:.2f} ms of the sheep's CPU, "
          f"{100 * scrape_cpu / SCRAPE_EVERY:.2f}% of a core at one scrape every "
          f"{SCRAPE_EVERY:g} s ({100 * scrape_cpu / 15:.3f}% at Prometheus' default 15 s)")


if __name__ == "__main__":
    main()
