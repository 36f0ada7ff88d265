"""Sequential 1 MiB I/O through a sheepfs mount, beside plain files and NBD.

    .venv/bin/python bench/bench_sheepfs.py [--size-mib 512] [--profile DIR]

One run, same disk, one sheep (copies=1), the same source bytes:
- plain file: `dd bs=1M conv=fdatasync` (write) and `dd bs=1M iflag=direct`
  (read) in the bench directory: what the disk and page cache give;
- sheepfs: `dd` into volume/Bench (buffered through the writeback cache
  then fdatasync; and oflag=direct), reads buffered on a fresh open and
  with iflag=direct;
- NBD: the same dd through `nbdfuse` over `nbdkit python
  sheepblk/nbd_plugin.py` (another FUSE file, same sheep), if the plugin
  exists.
Prints MB/s and the ratio of each to its plain-file baseline. With
--profile DIR, py-spy records the sheepfs process during each sheepfs job.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, drop_caches, free_port, timed, tool, wait_port, workdir  # noqa: E402
from sheepblk.client import SheepClient  # noqa: E402

MIB = 1 << 20


def _stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _is_mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def _wait_mounted(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not _is_mounted(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args!r} did not mount {path}")
        time.sleep(0.05)


def _unmount(path: Path) -> None:
    if _is_mounted(path):
        subprocess.run(["fusermount3", "-u", str(path)], check=False)


@contextmanager
def one_sheep(tmp: Path) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([tool("sheep"), "-f", "-p", str(port), "-c", f"local:{tmp}/shm",
                             str(tmp / "store")], stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "sheep.err", "wb"))
    try:
        wait_port(port)
        with SheepClient("127.0.0.1", port) as c:
            c.make_fs(copies=1)
        yield port
    finally:
        _stop(proc)


@contextmanager
def sheepfs(mnt: Path, port: int, log: Path) -> Iterator[int]:
    mnt.mkdir(exist_ok=True)
    proc = subprocess.Popen([tool("sheepfs"), str(mnt), "-f", "-p", str(port),
                             "--log", str(log)])
    try:
        _wait_mounted(mnt, proc)
        yield proc.pid
    finally:
        _unmount(mnt)
        _stop(proc)


@contextmanager
def nbd_file(mnt: Path, tmp: Path, port: int) -> Iterator[Path]:
    """nbdkit with our plugin on a unix socket, nbdfuse making it a file."""
    sock = tmp / "nbd.sock"
    nbdkit = subprocess.Popen(["nbdkit", "-f", "--exit-with-parent", "-U", str(sock), "python",
                               str(ROOT / "sheepblk/nbd_plugin.py"), "vdi=Bench",
                               f"address=127.0.0.1:{port}"], cwd=ROOT)
    mnt.mkdir(exist_ok=True)
    fuse = None
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if nbdkit.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nbdkit did not start")
            time.sleep(0.05)
        fuse = subprocess.Popen(["nbdfuse", str(mnt), "--unix", str(sock)])
        _wait_mounted(mnt, fuse)
        yield mnt / "nbd"
    finally:
        _unmount(mnt)
        if fuse is not None:
            _stop(fuse)
        _stop(nbdkit)


@contextmanager
def profiler(pid: int, out: Path | None) -> Iterator[None]:
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


def dd(*args: str) -> float:
    return timed(lambda: subprocess.run(["dd", "bs=1M", "status=none", *args],
                                        check=True, capture_output=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--profile", type=Path, help="write py-spy flame graphs here")
    args = ap.parse_args()
    n = args.size_mib
    mb = (n * MIB) / 1e6
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    def prof(name: str) -> Path | None:
        return args.profile / f"sheepfs-{name}.svg" if args.profile else None

    with workdir("sheepblk-bench-fs-") as tmp:
        src = tmp / "src.raw"
        with open(src, "wb") as f:
            for _ in range(n // 4):
                f.write(os.urandom(4 * MIB))
        plain = tmp / "plain.raw"
        base = {
            "write": mb / dd(f"if={src}", f"of={plain}", "conv=fdatasync"),
            "write direct": mb / dd(f"if={src}", f"of={plain}", "oflag=direct",
                                    "conv=notrunc,fdatasync"),
        }
        drop_caches()
        base["read"] = mb / dd(f"if={plain}", "of=/dev/null")
        base["read direct"] = mb / dd(f"if={plain}", "of=/dev/null", "iflag=direct")
        os.unlink(plain)

        rows: list[tuple[str, str, float]] = []
        with one_sheep(tmp) as port:
            with SheepClient("127.0.0.1", port) as c:
                c.create_vdi("Bench", n * MIB)
            mnt = tmp / "mnt"
            with sheepfs(mnt, port, tmp / "sheepfs.log") as pid:
                vol = mnt / "volume/Bench"
                with profiler(pid, prof("write")):
                    t = dd(f"if={src}", f"of={vol}", "conv=notrunc,fdatasync")
                rows.append(("sheepfs dd write (writeback, fdatasync)", "write", mb / t))
                with profiler(pid, prof("write-direct")):
                    t = dd(f"if={src}", f"of={vol}", "oflag=direct", "conv=notrunc,fdatasync")
                rows.append(("sheepfs dd write oflag=direct", "write direct", mb / t))
                drop_caches()
                with profiler(pid, prof("read")):
                    t = dd(f"if={vol}", "of=/dev/null")
                rows.append(("sheepfs dd read (fresh open)", "read", mb / t))
                with profiler(pid, prof("read-direct")):
                    t = dd(f"if={vol}", "of=/dev/null", "iflag=direct")
                rows.append(("sheepfs dd read iflag=direct", "read direct", mb / t))
            if (ROOT / "sheepblk/nbd_plugin.py").exists() and shutil.which("nbdfuse"):
                with nbd_file(tmp / "nbdmnt", tmp, port) as nf:
                    t = dd(f"if={src}", f"of={nf}", "conv=notrunc,fdatasync")
                    rows.append(("nbdfuse+nbdkit plugin dd write (fdatasync)", "write", mb / t))
                    t = dd(f"if={src}", f"of={nf}", "oflag=direct", "conv=notrunc,fdatasync")
                    rows.append(("nbdfuse+nbdkit plugin dd write direct", "write direct", mb / t))
                    drop_caches()
                    t = dd(f"if={nf}", "of=/dev/null")
                    rows.append(("nbdfuse+nbdkit plugin dd read", "read", mb / t))
                    t = dd(f"if={nf}", "of=/dev/null", "iflag=direct")
                    rows.append(("nbdfuse+nbdkit plugin dd read direct", "read direct", mb / t))

    print(f"\nsequential 1 MiB dd, {n} MiB, one sheep copies=1 (MB/s)")
    print(f"{'what':46} {'MB/s':>8} {'plain file':>11} {'ratio':>7}")
    for label, kind, v in rows:
        print(f"{label:46} {v:8.1f} {base[kind]:11.1f} {v / base[kind]:6.2f}x")
    fs = {k: v for label, k, v in rows if label.startswith("sheepfs")}
    nbd = {k: v for label, k, v in rows if label.startswith("nbdfuse")}
    if nbd:
        print("\nsheepfs / nbdfuse+plugin: " + ", ".join(
            f"{k} {fs[k] / nbd[k]:.2f}x" for k in fs if k in nbd))


if __name__ == "__main__":
    main()
