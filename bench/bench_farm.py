"""Farm benchmark: cluster snapshot save beside `tar` of the same store
directory, and the space a real ext4 image takes in the farm backend
beside its raw size (and beside the plain backend).

The image: `mkfs.ext4 -d` of a directory of real files (Debian's Python
standard library, /usr/lib/python3.11, by default) into a sparse file, written into a VDI with
`dog vdi write`. Run: `.venv/bin/python bench/bench_farm.py [--size MiB]
[--src DIR]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, sheep_cluster, timed, tool, workdir  # noqa: E402

MiB = 1 << 20


def _dog(port: int, *args: str, stdin: Path | None = None) -> bytes:
    with open(stdin, "rb") if stdin else open("/dev/null", "rb") as f:
        return subprocess.run([tool("dog"), *args, "-p", str(port)], stdin=f,
                              check=True, capture_output=True).stdout


def _blocks(d: Path) -> int:
    """Bytes allocated on disk by the files under `d` (holes excluded)."""
    if d.is_file():
        return d.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in d.rglob("*") if p.is_file())


def _tar(store: Path, tarball: Path) -> tuple[float, int]:
    """Seconds to tar (sparse-aware) a store's obj/ and fsync the tarball,
    as durable as our archive files; and the tarball's size."""

    def run() -> None:
        subprocess.run(["tar", "--sparse", "-cf", str(tarball), "-C", str(store), "obj"],
                       check=True)
        with open(tarball, "rb+") as f:
            os.fsync(f.fileno())

    return timed(run), tarball.stat().st_size


def make_image(tmp: Path, size_mib: int, src: Path) -> tuple[Path, int]:
    img = tmp / "ext4.img"
    subprocess.run(["truncate", "-s", f"{size_mib}M", str(img)], check=True)
    done = subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), str(img)],
                          capture_output=True)
    if done.returncode != 0:
        sys.exit(f"mkfs.ext4 -d {src} into {size_mib} MiB failed (does it fit? use a larger "
                 f"--size or a smaller --src): {done.stderr.decode(errors='replace').strip()}")
    return img, _blocks(img)


def one_backend(tmp: Path, backend: str, img: Path, size_mib: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with sheep_cluster(tmp / backend) as ports:
        port = ports[0]
        _dog(port, "cluster", "format", "-b", backend, "-c", "1", "-f")
        _dog(port, "vdi", "create", "img", f"{size_mib}M")
        out["write_s"] = timed(lambda: _dog(port, "vdi", "write", "img", stdin=img))
        store = tmp / backend / "store0"
        out["stored"] = _blocks(store / "obj")
        if backend == "plain":
            out["tar_s"], out["tar"] = _tar(store, tmp / "plain.tar")
        if backend == "farm":
            arch = tmp / "archive"
            out["save_s"] = timed(lambda: _dog(port, "cluster", "snapshot", "save", "one",
                                               str(arch)))
            out["save2_s"] = timed(lambda: _dog(port, "cluster", "snapshot", "save", "two",
                                                str(arch)))
            out["archive"] = _blocks(arch)
            out["tar_s"], out["tar"] = _tar(store, tmp / "farm.tar")
            restored = tmp / "restored.img"
            with sheep_cluster(tmp / "load") as lports:
                out["load_s"] = timed(lambda: _dog(lports[0], "cluster", "snapshot", "load",
                                                   "one", str(arch)))
                restored.write_bytes(_dog(lports[0], "vdi", "read", "img"))
            out["same"] = float(restored.read_bytes() == img.read_bytes())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256, help="image size in MiB")
    default_src = Path("/usr/lib/python3.11")
    if not default_src.is_dir():
        default_src = Path(sysconfig.get_paths()["stdlib"])
    ap.add_argument("--src", type=Path, default=default_src,
                    help="directory copied into the image")
    ns = ap.parse_args()
    with workdir("bench-farm-") as tmp:
        img, img_alloc = make_image(tmp, ns.size, ns.src)
        raw = ns.size * MiB
        plain = one_backend(tmp, "plain", img, ns.size)
        farm = one_backend(tmp, "farm", img, ns.size)
        assert farm["same"] == 1.0, "loaded image differs"
        mb = raw / 1e6
        print(f"\nimage: {ns.size} MiB ext4 of {ns.src} ({img_alloc / MiB:.1f} MiB allocated)")
        print_table("snapshot save (image MB per second of wall time)", [
            ("snapshot save (first) vs tar farm store", mb / farm["save_s"], mb / farm["tar_s"]),
            ("snapshot save (first) vs tar plain store", mb / farm["save_s"],
             mb / plain["tar_s"]),
            ("snapshot save (unchanged) vs tar farm store", mb / farm["save2_s"],
             mb / farm["tar_s"]),
            ("snapshot load vs tar farm store", mb / farm["load_s"], mb / farm["tar_s"]),
            ("dog vdi write: farm vs plain", mb / farm["write_s"], mb / plain["write_s"]),
        ])
        print_table("space (MiB; ratio = ours / baseline)", [
            ("farm store vs raw image size", farm["stored"] / MiB, raw / MiB),
            ("farm store vs plain store", farm["stored"] / MiB, plain["stored"] / MiB),
            ("farm store vs image blocks allocated", farm["stored"] / MiB, img_alloc / MiB),
            ("snapshot archive vs tar of the farm store", farm["archive"] / MiB,
             farm["tar"] / MiB),
            ("snapshot archive vs tar of the plain store", farm["archive"] / MiB,
             plain["tar"] / MiB),
        ], unit="MiB")


if __name__ == "__main__":
    main()
