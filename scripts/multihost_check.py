#!/usr/bin/env python3
"""Run every multi-host fault schedule, Jepsen-style, and report what broke.

    .venv/bin/python scripts/multihost_check.py [--seeds 1,2,3 | --seed-from 1 --runs 5]
        [--rounds 2] [--schedules zone,minority,...] [--hold SECONDS] [--keep DIR]

Each run (one seed) builds the eight hosts of tests/mh_cluster.py (five
sheep hosts, zones 0-4, copies=3; a ZooKeeper ensemble on three more),
starts the clients of tests/mh_run.py (native protocol from outside and
from inside one sheep host, NBD through nbdkit), and applies every
schedule `--rounds` times in a seeded order, each fault ended by a heal;
then it checks the history, the final value of every block and every
object's copies on disk (tests/mh_history.py says what counts as an
anomaly). Root, `ip netns`, nft and Debian's ZooKeeper are needed
(scripts/setup.sh --test installs them).

The report: per seed the schedules it ran and what each did, the
operations (acknowledged, failed, indeterminate writes; reads), the
anomalies and the late indeterminate writes (legal, but counted); then
the totals. Exit status 1 if any run found an anomaly. Replay one seed
with --seeds N (same schedules and rounds), or in the suite with
SHEEPBLK_MH_SEED=N for the short schedule.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import mh_cluster  # noqa: E402
import mh_faults  # noqa: E402
import mh_run  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", help="comma-separated seeds (default: --seed-from, --runs)")
    p.add_argument("--seed-from", type=int, default=1)
    p.add_argument("--runs", type=int, default=1, help="seeds from --seed-from on")
    p.add_argument("--rounds", type=int, default=1, help="times each schedule runs per seed")
    p.add_argument("--schedules", default=",".join(mh_faults.SCHEDULES),
                   help="comma-separated (default: all); minority:N splits N hosts off")
    p.add_argument("--hold", type=float, default=3 * mh_cluster.SESSION,
                   help="seconds each fault lasts (default: three session timeouts)")
    p.add_argument("--keep", type=Path, help="keep each run's files (logs, histories) here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    why = mh_cluster.missing()
    if why is not None:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds
             else list(range(args.seed_from, args.seed_from + args.runs)))
    schedules = args.schedules.split(",")
    for s in schedules:
        mh_faults.make(s)  # a typo fails now, not after the first run
    totals = {"runs": 0, "faults": 0, "ops": 0, "acked": 0, "anomalies": 0, "late": 0,
              "crashed": 0}
    bad: list[int] = []
    started = time.monotonic()
    for seed in seeds:
        tmp = Path(tempfile.mkdtemp(prefix=f"mh-seed{seed}-"))
        t0 = time.monotonic()
        print(f"=== seed {seed}: {len(schedules) * args.rounds} faults ({', '.join(schedules)}"
              f" x{args.rounds})", flush=True)
        try:
            out = mh_run.run(tmp, seed, schedules, hold=args.hold, rounds=args.rounds)
        except Exception:  # noqa: BLE001 - a run that breaks is a finding, the rest go on
            totals["crashed"] += 1
            bad.append(seed)
            print(f"run crashed:\n{traceback.format_exc()}", flush=True)
            print(f"files: {tmp}")
            continue
        totals["runs"] += 1
        totals["faults"] += len(out.rounds)
        totals["ops"] += out.report.ops
        totals["acked"] += out.report.acked
        totals["anomalies"] += len(out.anomalies)
        totals["late"] += len(out.report.late)
        print(out.text())
        print(f"  ({time.monotonic() - t0:.0f} s)", flush=True)
        if out.anomalies:
            bad.append(seed)
        if args.keep is not None or out.anomalies:
            dest = (args.keep or Path(tempfile.gettempdir())) / tmp.name
            if dest != tmp:
                shutil.move(str(tmp), dest)
            print(f"  files: {dest}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"=== {totals['runs']} runs ({totals['crashed']} crashed), {totals['faults']} faults, "
          f"{totals['ops']} operations ({totals['acked']} acknowledged writes), "
          f"{totals['anomalies']} anomalies, {totals['late']} late indeterminate writes, "
          f"{time.monotonic() - started:.0f} s")
    if bad:
        print(f"seeds with anomalies: {','.join(map(str, bad))} "
              f"(replay: --seeds {','.join(map(str, bad))} --schedules {args.schedules} "
              f"--rounds {args.rounds})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
