"""The size and free bytes a sheep reports for its store (STAT_SHEEP,
`dog node info`), counted as C sheep counts them: the room left on the
disks plus what the objects take, so other files on a disk shrink the
node instead of counting as its use (Sheepdog's test 113)."""

from __future__ import annotations

import os
from pathlib import Path

from sheepblk.server.usage import store_usage
from sheepblk.store import MdStore, open_store

MIB = 1 << 20


def test_used_is_the_objects_blocks_only(tmp_path: Path) -> None:
    disks = [tmp_path / "d0", tmp_path / "d1"]
    store = MdStore(disks, "plain", lambda k, p: open_store(k, str(p)))
    for oid in (1, 2, 3):
        store.create_and_write(oid, 4 * MIB, 0, memoryview(b"\1" * MIB), sync=False)
    (disks[0] / "stray").write_bytes(b"\2" * MIB)  # not an object: never "used"
    size, free = store_usage(store)
    blocks = 0
    for d in store.info():
        for name in os.listdir(d[1]):
            if len(name) == 16:
                blocks += os.stat(d[1] / name).st_blocks * 512
    assert size - free == blocks >= 3 * MIB
