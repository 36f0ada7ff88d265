"""fio over NBD: our nbdkit plugin beside `nbdkit file` and an in-memory Python plugin.

    .venv/bin/python bench/bench_nbd.py [--size-mib 256] [--runtime 10] [--profile DIR]

One run, same disk, same fio jobs (ioengine=nbd over a unix socket):
sequential 1 MiB write and read, random 4 KiB read and write, all at queue
depth 16. Targets:
- ours: `nbdkit python sheepblk/nbd_plugin.py vdi=Bench address=unix:STORE/sock`
  on one sheep, copies=1; the random jobs again over TCP (address=HOST:PORT);
- ours on a 3-node copies=3 cluster (through the first node's unix socket);
- `nbdkit file` on a file in the same directory (what the disk can do);
- a trivial nbdkit Python plugin serving a bytearray: the ceiling of any
  Python plugin (nbdkit's embedded interpreter, the GIL, the callback cost).
Every target is filled once before the measured jobs, so reads hit data.
Prints MB/s or IOPS and our ratio to each baseline. For orientation, C
Sheepdog 1.0 on a 2-core machine: 708 / 1,389 MB/s sequential write / read,
17.1k / 12.4k random 4 KiB read / write IOPS.

Then 4 KiB random reads and writes with fio on files, direct=1, ioengine
psync (one at a time) and libaio (queue depth 16): sheepfs's volume/ file of
the same VDI, and a plain file on the same disk; the libaio rows are also
compared with our NBD rows.

With --profile DIR, py-spy (pip install py-spy) records the nbdkit process of
our plugin during each job and writes DIR/<job>.svg flame graphs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_sheepfs import sheepfs  # noqa: E402
from bench.common import (  # noqa: E402
    ROOT,
    profiler,
    sheep_cluster,
    stop_processes,
    workdir,
)
from sheepblk.client import SheepClient  # noqa: E402

# (name, fio rw, block size, what the table shows)
JOBS = [
    ("seq write 1M", "write", "1M", "MB/s"),
    ("seq read 1M", "read", "1M", "MB/s"),
    ("rand read 4K", "randread", "4k", "IOPS"),
    ("rand write 4K", "randwrite", "4k", "IOPS"),
]
IODEPTH = 16
RAMP_SECONDS = 1
MIN_RAMPED_RUNTIME = 3
C_SHEEPDOG = {"seq write 1M": 708.0, "seq read 1M": 1389.0,
              "rand read 4K": 17100.0, "rand write 4K": 12400.0}

MEMORY_PLUGIN = '''\
"""The ceiling: a Python plugin with nothing behind it."""
import nbdkit

API_VERSION = 2
disk = bytearray()


def config(key, value):
    global disk
    disk = bytearray(nbdkit.parse_size(value))


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL


def open(readonly):
    return 1


def get_size(h):
    return len(disk)


def can_multi_conn(h):
    return True


def pread(h, buf, offset, flags):
    buf[:] = disk[offset:offset + len(buf)]


def pwrite(h, buf, offset, flags):
    disk[offset:offset + len(buf)] = buf


def flush(h, flags):
    pass
'''


@contextmanager
def nbdkit(sock: Path, *args: str) -> Iterator[int]:
    """Run `nbdkit -f -U sock ARGS` until the block ends; yield its pid."""
    proc = subprocess.Popen(["nbdkit", "-f", "--exit-with-parent", "-U", str(sock), *args],
                            cwd=ROOT, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"nbdkit {args[0]} failed: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise TimeoutError("nbdkit did not start")
            time.sleep(0.05)
        yield proc.pid
    finally:
        stop_processes([proc], timeout=30)



def fio(sock: Path, name: str, rw: str, bs: str, size_mib: int, runtime: int | None) -> dict:
    return run_fio([f"--name={name.replace(' ', '_')}", "--ioengine=nbd",
                    f"--uri=nbd+unix:///?socket={sock}", f"--rw={rw}", f"--bs={bs}",
                    f"--iodepth={IODEPTH}", f"--size={size_mib}M"], rw, runtime)


def run_fio(args: list[str], rw: str, runtime: int | None) -> dict:
    args = ["fio", "--output-format=json", *args]
    if runtime:
        # A warm-up second before measuring, except at toy runtimes (the
        # suite's smoke run), where it would double every job.
        ramp = RAMP_SECONDS if runtime >= MIN_RAMPED_RUNTIME else 0
        args += ["--time_based", f"--runtime={runtime}", f"--ramp_time={ramp}"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return {"MB/s": side["bw_bytes"] / 1e6, "IOPS": side["iops"], "ios": side["total_ios"]}


def run_target(label: str, sock: Path, pid: int, size_mib: int, runtime: int,
               prof: Path | None, jobs: list[tuple[str, str, str, str]] = JOBS) -> dict[str, dict]:
    fio(sock, "fill", "write", "4M", size_mib, None)
    results = {}
    for name, rw, bs, _ in jobs:
        out = prof / f"{label.replace(' ', '_')}-{name.replace(' ', '_')}.svg" if prof else None
        with profiler(pid, out):
            results[name] = fio(sock, name, rw, bs, size_mib, runtime)
        print(f"  {label:16} {name:14} {results[name]['MB/s']:9.1f} MB/s "
              f"{results[name]['IOPS']:9.0f} IOPS", flush=True)
    return results


# fio jobs on a file: sheepfs's volume/ file and a plain file on the same disk.
FILE_JOBS = [
    ("psync rand read 4K", "randread", ["--ioengine=psync"]),
    ("psync rand write 4K", "randwrite", ["--ioengine=psync"]),
    ("libaio rand read 4K", "randread", ["--ioengine=libaio", f"--iodepth={IODEPTH}"]),
    ("libaio rand write 4K", "randwrite", ["--ioengine=libaio", f"--iodepth={IODEPTH}"]),
]


def file_jobs(label: str, path: Path, size_mib: int, runtime: int) -> dict[str, float]:
    res = {}
    for name, rw, extra in FILE_JOBS:
        r = run_fio([f"--name={name.replace(' ', '_')}", f"--filename={path}", "--direct=1",
                     f"--rw={rw}", "--bs=4k", f"--size={size_mib}M", *extra], rw, runtime)
        res[name] = r["IOPS"]
        print(f"  {label:16} {name:20} {r['IOPS']:9.0f} IOPS", flush=True)
    return res


def plugin_args(store: Path, *extra: str) -> list[str]:
    """Our plugin on the sheep's unix socket, as one runs it beside a sheep."""
    return ["python", "sheepblk/nbd_plugin.py", "vdi=Bench", f"address=unix:{store / 'sock'}",
            *extra]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runtime", type=int, default=10, help="seconds per measured job")
    ap.add_argument("--profile", type=Path, help="py-spy flame graphs of our plugin here")
    args = ap.parse_args()
    size = args.size_mib << 20
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    res: dict[str, dict[str, dict]] = {}
    files: dict[str, dict[str, float]] = {}
    with workdir() as tmp:
        with sheep_cluster(tmp / "one", stop_timeout=30) as (port,):
            with SheepClient("127.0.0.1", port) as c:
                c.create_vdi("Bench", size)
            with nbdkit(tmp / "ours.sock", *plugin_args(tmp / "one" / "store0")) as pid:
                res["ours"] = run_target("ours", tmp / "ours.sock", pid, args.size_mib,
                                         args.runtime, args.profile)
            with nbdkit(tmp / "tcp.sock", "python", "sheepblk/nbd_plugin.py", "vdi=Bench",
                        f"address=127.0.0.1:{port}") as pid:
                res["tcp"] = run_target("ours over TCP", tmp / "tcp.sock", pid, args.size_mib,
                                        args.runtime, None, JOBS[2:])
            mnt = tmp / "mnt"
            with sheepfs(mnt, port, tmp / "sheepfs.log"):
                files["sheepfs"] = file_jobs("sheepfs", mnt / "volume" / "Bench",
                                             args.size_mib, args.runtime)
        with sheep_cluster(tmp / "three", nodes=3, copies=3, stop_timeout=30) as ports:
            with SheepClient("127.0.0.1", ports[0]) as c:
                c.create_vdi("Bench", size)
            with nbdkit(tmp / "three.sock", *plugin_args(tmp / "three" / "store0")) \
                    as pid:
                res["three"] = run_target("3 nodes copies=3", tmp / "three.sock", pid,
                                          args.size_mib, args.runtime, None)
        img = tmp / "file.img"
        with open(img, "wb") as f:
            f.write(bytes(0))
            f.truncate(size)
        files["plain"] = file_jobs("plain file", img, args.size_mib, args.runtime)
        with nbdkit(tmp / "file.sock", "file", str(img)) as pid:
            res["file"] = run_target("nbdkit file", tmp / "file.sock", pid, args.size_mib,
                                     args.runtime, None)
        os.unlink(img)
        mem = tmp / "memory_plugin.py"
        mem.write_text(MEMORY_PLUGIN)
        with nbdkit(tmp / "mem.sock", "python", str(mem), f"size={size}") as pid:
            res["mem"] = run_target("python memory", tmp / "mem.sock", pid, args.size_mib,
                                    args.runtime, None)

    print(f"\nfio over NBD, {args.size_mib} MiB, {args.runtime} s per job, iodepth {IODEPTH}; "
          "ours: one sheep copies=1 on its unix socket")
    print(f"{'job':15} {'unit':>5} {'ours':>9} {'file':>9} {'py mem':>9} {'C sd':>9} "
          f"{'/file':>6} {'/mem':>6} {'/C sd':>6}")
    for name, _, _, unit in JOBS:
        o, f, m = (res[k][name][unit] for k in ("ours", "file", "mem"))
        ref = C_SHEEPDOG[name]
        print(f"{name:15} {unit:>5} {o:9.0f} {f:9.0f} {m:9.0f} {ref:9.0f} "
              f"{o / f:6.2f} {o / m:6.2f} {o / ref:6.2f}")
    print("\nthe same jobs elsewhere, and their ratio to ours above")
    for key, label in (("tcp", "ours over TCP"), ("three", "3 nodes copies=3")):
        for name, _, _, unit in JOBS:
            if name in res[key]:
                v = res[key][name][unit]
                print(f"{label:17} {name:15} {unit:>5} {v:9.0f} "
                      f"/ours {v / res['ours'][name][unit]:5.2f} "
                      f"/mem {v / res['mem'][name][unit]:5.2f}")
    print("\n4K random I/O on a file, direct=1: sheepfs volume/ file and a plain file; "
          "sheepfs against our NBD (libaio rows: same queue depth)")
    for name, _, _ in FILE_JOBS:
        sf, pf = files["sheepfs"][name], files["plain"][name]
        nbd_name = "rand read 4K" if "read" in name else "rand write 4K"
        line = f"{name:20} sheepfs {sf:9.0f}  plain {pf:9.0f}  /plain {sf / pf:5.2f}"
        if name.startswith("libaio"):
            line += f"  /nbd {sf / res['ours'][nbd_name]['IOPS']:5.2f}"
        print(line)


if __name__ == "__main__":
    main()
