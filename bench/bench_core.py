"""Sequential write and read of a VDI through the protocol, beside plain file I/O.

    .venv/bin/python bench/bench_core.py [--size-mib 512]

Measures, in one run on the same disk:
- `dd bs=4M conv=fdatasync` of the same bytes into a plain file (durable
  baseline) and `cat FILE > /dev/null` from the page cache (read baseline);
- `dog vdi write` (durable, then with a `sheep -n` node) and `dog vdi read`;
- a client keeping several 4 MiB requests in flight (sheepblk.client.Vdi
  with 32 MiB writes, fanned out over the connection pool).
Prints MB/s and ratios. For orientation, C Sheepdog 1.0 on a 2-core machine:
dog vdi write 182 MB/s durable (0.5x dd fdatasync), 446 MB/s with -n,
dog vdi read about 1,300 MB/s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    print_table,
    random_file,
    sheep_cluster,
    timed,
    tool,
    workdir,
)
from sheepblk.client import SheepClient, Vdi  # noqa: E402

CHUNK = 32 << 20


def client_write(port: int, name: str, src: Path) -> None:
    with SheepClient("127.0.0.1", port, pool_size=8) as c, Vdi(c, name, lock=True) as v:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        off = 0
        with open(src, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                v.pwrite(view[:n], off)
                off += n


def client_read(port: int, name: str, size: int) -> None:
    with SheepClient("127.0.0.1", port, pool_size=8) as c, Vdi(c, name) as v:
        buf = bytearray(CHUNK)
        for off in range(0, size, CHUNK):
            n = min(CHUNK, size - off)
            v.pread_into(memoryview(buf)[:n], off)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=512)
    args = ap.parse_args()
    size = args.size_mib << 20
    mb = size / 1e6
    dog = tool("dog")

    with workdir() as tmp:
        src = random_file(tmp / "disk.raw", size)

        dd_t = timed(lambda: subprocess.run(
            ["dd", f"if={src}", f"of={tmp / 'dd.out'}", "bs=4M", "conv=fdatasync"],
            check=True, capture_output=True))
        cat_t = timed(lambda: subprocess.run(f"cat {tmp / 'dd.out'} > /dev/null",
                                             shell=True, check=True))
        os.unlink(tmp / "dd.out")
        dd_mbs, cat_mbs = mb / dd_t, mb / cat_t

        rows = []
        for label, extra in (("durable", []), ("-n (no sync)", ["-n"])):
            with sheep_cluster(tmp / label.split()[0].strip("-"), 1, 1, extra) as (port,):
                p = ["-p", str(port)]
                subprocess.run([dog, "vdi", "create", "Alice", str(size), *p], check=True)
                w = timed(lambda: subprocess.run(
                    f"{dog} vdi write Alice -p {port} < {src}", shell=True, check=True))
                r = timed(lambda: subprocess.run(
                    f"{dog} vdi read Alice -p {port} > /dev/null", shell=True, check=True))
                subprocess.run([dog, "vdi", "create", "Bob", str(size), *p], check=True)
                cw = timed(lambda: client_write(port, "Bob", src))
                cr = timed(lambda: client_read(port, "Bob", size))
                rows += [
                    (f"dog vdi write, {label} / dd fdatasync", mb / w, dd_mbs),
                    (f"client 8 in flight write, {label} / dd", mb / cw, dd_mbs),
                    (f"dog vdi read, {label} / cat", mb / r, cat_mbs),
                    (f"client 8 in flight read, {label} / cat", mb / cr, cat_mbs),
                ]
        print_table(f"Sequential {args.size_mib} MiB, one node, copies=1", rows)


if __name__ == "__main__":
    main()
