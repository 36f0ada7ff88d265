"""Sequential 1 MiB I/O through a sheepfs mount, beside plain files and NBD.

    .venv/bin/python bench/bench_sheepfs.py [--size-mib 512] [--profile DIR]

One run, same disk, one sheep (copies=1), the same source bytes, the same
jobs on each target: dd bs=1M write buffered + fdatasync, write
oflag=direct, read on a cold cache, read iflag=direct, and two readers of
the two halves at once (cold cache). The VDI is filled before the first
target, so every target overwrites allocated objects. Targets:
- plain file: a file in the bench directory (what disk and page cache give);
- sheepfs: volume/Bench of a sheepfs mount;
- with --baseline-tree DIR: the sheepfs of another checkout (e.g.
  `git worktree add /tmp/old HEAD~3`), same sheep, for before/after;
- NBD: `nbdfuse` over `nbdkit python sheepblk/nbd_plugin.py` (another FUSE
  file, same sheep), if the plugin exists.
Prints MB/s with the ratio to the plain file, then sheepfs against NBD
(and against the baseline tree). With --profile DIR, py-spy records the
sheepfs process during each sheepfs job.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ROOT,
    drop_caches,
    profiler,
    sheep_cluster,
    stop_processes,
    timed,
    tool,
    workdir,
)
from sheepblk.client import SheepClient, Vdi  # noqa: E402

MIB = 1 << 20


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
def sheepfs(mnt: Path, port: int, log: Path, tree: Path | None = None) -> Iterator[int]:
    """sheepfs -f on `mnt`; from the checkout `tree` instead of ours if given."""
    mnt.mkdir(exist_ok=True)
    if tree is None:
        cmd, env = [tool("sheepfs")], None
    else:
        tree = tree.resolve()
        cmd = [sys.executable, str(tree / "cli/sheepfs.py")]
        env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.Popen([*cmd, str(mnt), "-f", "-p", str(port), "--log", str(log)],
                            env=env)
    try:
        _wait_mounted(mnt, proc)
        yield proc.pid
    finally:
        _unmount(mnt)
        stop_processes([proc], 60)


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
            stop_processes([fuse], 60)
        stop_processes([nbdkit], 60)


def dd(*args: str) -> float:
    return timed(lambda: subprocess.run(["dd", "bs=1M", "status=none", *args],
                                        check=True, capture_output=True))


def two_readers(path: Path, n: int) -> float:
    """Seconds for two dd reading the two halves of `path` at once."""
    half = n // 2
    cmds = [["dd", f"if={path}", "of=/dev/null", "bs=1M", "status=none", f"count={half}"],
            ["dd", f"if={path}", "of=/dev/null", "bs=1M", "status=none", f"skip={half}",
             f"count={half}"]]

    def run() -> None:
        procs = [subprocess.Popen(c) for c in cmds]
        if any(p.wait() for p in procs):
            raise RuntimeError(f"dd failed on {path}")

    return timed(run)


KINDS = ("write", "write direct", "read", "read direct", "2 readers")
LABELS = {
    "write": "dd write (buffered, fdatasync)",
    "write direct": "dd write oflag=direct",
    "read": "dd read (fresh, cold cache)",
    "read direct": "dd read iflag=direct",
    "2 readers": "2 dd readers at once (halves)",
}


def jobs(src: Path, target: Path, n: int, prof: Callable[[str], AbstractContextManager[object]],
         fresh_target: bool = False) -> dict[str, float]:
    """MB/s of each kind of job on `target` (an existing file or volume)."""
    mb = (n * MIB) / 1e6
    out: dict[str, float] = {}
    trunc = [] if fresh_target else ["conv=notrunc,fdatasync"]
    with prof("write"):
        out["write"] = mb / dd(f"if={src}", f"of={target}", *(trunc or ["conv=fdatasync"]))
    with prof("write-direct"):
        out["write direct"] = mb / dd(f"if={src}", f"of={target}", "oflag=direct",
                                      "conv=notrunc,fdatasync")
    drop_caches()
    with prof("read"):
        out["read"] = mb / dd(f"if={target}", "of=/dev/null")
    with prof("read-direct"):
        out["read direct"] = mb / dd(f"if={target}", "of=/dev/null", "iflag=direct")
    drop_caches()
    with prof("2-readers"):
        out["2 readers"] = mb / two_readers(target, n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--profile", type=Path, help="write py-spy flame graphs here")
    ap.add_argument("--baseline-tree", type=Path,
                    help="also run the sheepfs of this checkout (e.g. a git worktree of an "
                         "older commit), same sheep, same run")
    args = ap.parse_args()
    n = args.size_mib
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    def no_prof(name: str) -> AbstractContextManager[object]:
        return nullcontext()

    results: dict[str, dict[str, float]] = {}
    with workdir("sheepblk-bench-fs-") as tmp:
        src = tmp / "src.raw"
        with open(src, "wb") as f:
            for _ in range(n // 4):
                f.write(os.urandom(4 * MIB))
        plain = tmp / "plain.raw"
        results["plain file"] = jobs(src, plain, n, no_prof, fresh_target=True)
        os.unlink(plain)

        with sheep_cluster(tmp, stop_timeout=60) as (port,):
            with SheepClient("127.0.0.1", port) as c:
                c.create_vdi("Bench", n * MIB)
                # Allocate every object first, so that each target overwrites
                # (otherwise the first one alone pays for the allocation).
                with Vdi(c, "Bench") as v, open(src, "rb") as srcf:
                    for off in range(0, n * MIB, 4 * MIB):
                        v.pwrite(srcf.read(4 * MIB), off)
            mnt = tmp / "mnt"
            with sheepfs(mnt, port, tmp / "sheepfs.log") as pid:

                def prof(name: str) -> AbstractContextManager[object]:
                    out = args.profile / f"sheepfs-{name}.svg" if args.profile else None
                    return profiler(pid, out)

                results["sheepfs"] = jobs(src, mnt / "volume/Bench", n, prof)
            if args.baseline_tree:
                with sheepfs(mnt, port, tmp / "sheepfs-base.log", args.baseline_tree) as pid:
                    results[f"sheepfs ({args.baseline_tree.name})"] = jobs(
                        src, mnt / "volume/Bench", n, no_prof)
            if (ROOT / "sheepblk/nbd_plugin.py").exists() and shutil.which("nbdfuse"):
                with nbd_file(tmp / "nbdmnt", tmp, port) as nf:
                    results["nbdfuse+plugin"] = jobs(src, nf, n, no_prof)

    base = results["plain file"]
    print(f"\nsequential 1 MiB dd, {n} MiB, one sheep copies=1: MB/s (ratio to plain file)")
    names = list(results)
    print(f"{'':32}" + "".join(f"{name[:22]:>24}" for name in names))
    for kind in KINDS:
        cells = "".join(f"{r[kind]:10.1f} ({r[kind] / base[kind]:5.2f}x)      "
                        for r in results.values())
        print(f"{LABELS[kind]:32}{cells}")
    if "nbdfuse+plugin" in results:
        fs, nbd = results["sheepfs"], results["nbdfuse+plugin"]
        print("\nsheepfs / nbdfuse+plugin: " + ", ".join(
            f"{k} {fs[k] / nbd[k]:.2f}x" for k in KINDS))
    for name in names:
        if name.startswith("sheepfs ("):
            fs, old = results["sheepfs"], results[name]
            print(f"sheepfs / {name}: " + ", ".join(f"{k} {fs[k] / old[k]:.2f}x" for k in KINDS))


if __name__ == "__main__":
    main()
