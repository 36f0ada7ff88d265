"""What every backend declares on the ObjectStore protocol (sendfile
reads, switching backend, object sizes, the object directory) and that
each one answers for it, feature or not, without being probed; and that a
backend name nobody knows is an error, never plain."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from sheepblk.store import (
    FarmStore,
    MdStore,
    NoObject,
    ObjectStore,
    PlainStore,
    StoreError,
    TreeStore,
    UnknownBackend,
    Unsupported,
    open_node_store,
    open_store,
)

MiB = 1 << 20
OID = 0x00ABCD0000000007


def _md(kind: str) -> Callable[[Path], MdStore]:
    def make(root: Path) -> MdStore:
        return MdStore([root / "d1", root / "d2"], kind, lambda k, p: open_store(k, str(p)))
    return make


STORES: dict[str, Callable[[Path], ObjectStore]] = {
    "plain": PlainStore, "farm": FarmStore, "tree": TreeStore,
    "md-plain": _md("plain"), "md-farm": _md("farm"), "md-tree": _md("tree"),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    return STORES[request.param](tmp_path)


def test_object_size_is_the_logical_size(store: ObjectStore) -> None:
    store.create_and_write(OID, 4 * MiB, 100, memoryview(b"x" * 10), sync=True)
    assert store.object_size(OID) == 4 * MiB
    with pytest.raises(NoObject):
        store.object_size(OID + 1)


def test_open_read_is_declared(store: ObjectStore) -> None:
    store.create_and_write(OID, 1 * MiB, 0, memoryview(b"abc"), sync=True)
    assert store.can_open_read == (store.name in ("plain", "tree"))
    if not store.can_open_read:
        with pytest.raises(Unsupported):
            store.open_read(OID)
        return
    fd, size = store.open_read(OID)
    try:
        assert size == 1 * MiB
        assert os.pread(fd, 3, 0) == b"abc"
    finally:
        os.close(fd)


def test_reopen_to_its_own_backend_is_a_no_op(store: ObjectStore) -> None:
    store.create_and_write(OID, 4096, 0, memoryview(b"kept"), sync=True)
    store.reopen(store.name)
    buf = memoryview(bytearray(4))
    store.read_into(OID, 0, buf)
    assert bytes(buf) == b"kept"


@pytest.mark.parametrize("make", [PlainStore, FarmStore, TreeStore])
def test_a_single_backend_cannot_become_another(tmp_path: Path,
                                                make: Callable[[Path], ObjectStore]) -> None:
    s = make(tmp_path)
    assert not s.can_reopen
    other = "farm" if s.name != "farm" else "plain"
    with pytest.raises(Unsupported, match=other):
        s.reopen(other)
    assert s.name != other


def test_md_switches_every_disk(tmp_path: Path) -> None:
    s = _md("plain")(tmp_path)
    assert s.can_reopen and s.can_open_read
    s.reopen("farm")
    assert s.name == "farm" and not s.can_open_read
    assert all(isinstance(d.store, FarmStore) for d in s.all_disks())
    s.reopen("tree")
    assert s.name == "tree" and s.can_open_read
    assert all(isinstance(d.store, TreeStore) for d in s.all_disks())
    assert all((d.obj_dir / "meta").is_dir() for d in s.all_disks())


def test_obj_dir(tmp_path: Path, store: ObjectStore) -> None:
    if isinstance(store, MdStore):
        assert store.obj_dir is None  # one per disk
        assert [d.obj_dir for d in store.all_disks()] == [tmp_path / "d1" / "obj",
                                                         tmp_path / "d2" / "obj"]
    else:
        assert store.obj_dir == tmp_path / "obj"


def test_a_node_store_of_an_unknown_backend_is_an_error(tmp_path: Path) -> None:
    """A config naming a backend of another version must not open as
    plain: that store's objects would be served as garbage."""
    disk = tmp_path / "d1"
    with pytest.raises(UnknownBackend, match=r"'dummy'.*known: farm, plain, tree") as err:
        open_node_store("dummy", [disk])
    assert isinstance(err.value, StoreError) and isinstance(err.value, ValueError)
    assert not disk.exists(), "a disk was touched before the kind was checked"
    with pytest.raises(UnknownBackend, match="'dummy'"):
        open_store("dummy", str(tmp_path))
    assert open_node_store("farm", [disk]).name == "farm"
