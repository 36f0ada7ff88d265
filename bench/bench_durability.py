"""What the durability fixes cost: the same jobs on this tree and on an
older one (`--before TREE`, a checkout of an earlier commit), in one run.

    .venv/bin/python bench/bench_durability.py [--before /tmp/old] [--size-mib 256]

For each tree and each store (plain, farm), one node, copies=1:
- `dog vdi write` of a random image, durable and with `-w` (writeback,
  one flush at the end), beside `dd bs=4M conv=fdatasync` of the same bytes;
- fio over NBD (our plugin), 4 KiB random writes with an fsync (NBD flush)
  every 32 writes, beside the same fio job on `nbdkit file`.
Prints MB/s (IOPS for fio) and the ratio to the baseline of the same run.
For orientation, C Sheepdog 1.0 on a 2-core machine: dog vdi write 182 MB/s
durable. Runs the older tree's `sheep`, `dog` and plugin by putting it
first on PYTHONPATH.
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

from bench.common import (  # noqa: E402
    ROOT,
    free_port,
    random_file,
    stop_processes,
    timed,
    tool,
    wait_port,
    workdir,
)

STORES = ("plain", "farm")


@contextmanager
def one_node(tmp: Path, store: str, env: dict[str, str]) -> Iterator[int]:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    with open(tmp / "sheep.err", "wb") as err:
        proc = subprocess.Popen([tool("sheep"), "-f", "-p", str(port), "-c",
                                 f"local:{tmp}/shm", str(tmp / "store")],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        wait_port(port)
        subprocess.run([tool("dog"), "cluster", "format", "-c", "1", "-b", store, "-p",
                        str(port)], check=True, capture_output=True, env=env)
        yield port
    finally:
        stop_processes([proc], 30)


@contextmanager
def nbdkit(sock: Path, args: list[str], env: dict[str, str], cwd: Path) -> Iterator[None]:
    proc = subprocess.Popen(["nbdkit", "-f", "--exit-with-parent", "-U", str(sock), *args],
                            cwd=cwd, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nbdkit {args[0]} did not start")
            time.sleep(0.05)
        yield
    finally:
        stop_processes([proc], 30)


def fio_randwrite_fsync32(sock: Path, size_mib: int, runtime: int) -> float:
    out = subprocess.run(
        ["fio", "--output-format=json", "--name=rw", "--ioengine=nbd",
         f"--uri=nbd+unix:///?socket={sock}", "--rw=randwrite", "--bs=4k", "--iodepth=16",
         f"--size={size_mib}M", "--fsync=32", "--time_based", f"--runtime={runtime}",
         "--ramp_time=1"], check=True, capture_output=True, text=True).stdout
    return float(json.loads(out[out.index("{"):])["jobs"][0]["write"]["iops"])


def measure(tree: Path, tmp: Path, src: Path, size_mib: int, runtime: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    dog = tool("dog")
    out: dict[str, float] = {}
    mb = (size_mib << 20) / 1e6
    for store in STORES:
        for mode, flag in (("durable", ""), ("-w", "-w")):
            with one_node(tmp / f"{store}{mode}", store, env) as port:
                subprocess.run([dog, "vdi", "create", "A", f"{size_mib}M", "-p", str(port)],
                               check=True, env=env)
                cmd = f"{dog} vdi write {flag} A -p {port} < {src}"
                t = timed(lambda cmd=cmd: subprocess.run(cmd, shell=True, check=True,  # type: ignore[misc]
                                                         env=env))
                out[f"dog vdi write {mode}, {store}"] = mb / t
        with one_node(tmp / f"{store}-nbd", store, env) as port:
            subprocess.run([dog, "vdi", "create", "B", f"{size_mib}M", "-p", str(port)],
                           check=True, env=env)
            sock = tmp / f"{store}.sock"
            with nbdkit(sock, ["python", str(tree / "sheepblk/nbd_plugin.py"), "vdi=B",
                               f"address=127.0.0.1:{port}"], env, tree):
                out[f"fio 4K randwrite fsync/32, {store}"] = fio_randwrite_fsync32(
                    sock, size_mib, runtime)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", type=Path, help="a checkout of an earlier commit")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runtime", type=int, default=8, help="seconds per fio job")
    args = ap.parse_args()
    size = args.size_mib << 20
    with workdir() as tmp:
        src = random_file(tmp / "disk.raw", size)
        dd_t = timed(lambda: subprocess.run(
            ["dd", f"if={src}", f"of={tmp / 'dd.out'}", "bs=4M", "conv=fdatasync"],
            check=True, capture_output=True))
        os.unlink(tmp / "dd.out")
        dd = size / 1e6 / dd_t
        img = tmp / "file.img"
        with open(img, "wb") as f:
            f.truncate(size)
        with nbdkit(tmp / "file.sock", ["file", str(img)], dict(os.environ), ROOT):
            file_iops = fio_randwrite_fsync32(tmp / "file.sock", args.size_mib, args.runtime)
        trees = [("after", ROOT)] + ([("before", args.before)] if args.before else [])
        res = {label: measure(tree, tmp / label, src, args.size_mib, args.runtime)
               for label, tree in trees}
    print(f"\n{args.size_mib} MiB, one node copies=1; baselines: dd fdatasync {dd:.0f} MB/s, "
          f"nbdkit file {file_iops:.0f} IOPS")
    head = f"{'job':38} {'after':>9}"
    if args.before:
        head += f" {'before':>9} {'after/before':>12}"
    print(head + f" {'/baseline':>10}")
    for job, value in res["after"].items():
        base = file_iops if job.startswith("fio") else dd
        line = f"{job:38} {value:9.1f}"
        if args.before:
            old = res["before"][job]
            line += f" {old:9.1f} {value / old:11.2f}x"
        print(line + f" {value / base:9.2f}x")


if __name__ == "__main__":
    main()
