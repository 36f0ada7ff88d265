"""One node's persistent state: objects (backends), config, epochs, pid lock."""

from collections.abc import Callable
from pathlib import Path

from .backend import ObjectStore
from .errors import (
    CorruptObject,
    InvalidRange,
    NoObject,
    NoSpace,
    StoreError,
    StoreIOError,
    UnknownBackend,
    Unsupported,
)
from .farm import FarmStore
from .files import (
    AlreadyRunning,
    EpochStore,
    NodeConfig,
    PidLock,
    load_node_space,
    save_node_space,
    write_atomic,
)
from .md import MdStore
from .plain import PlainStore
from .tree import TreeStore

BACKENDS: dict[str, Callable[..., ObjectStore]] = {
    "plain": PlainStore, "tree": TreeStore, "farm": FarmStore,
}
# What GET_STORE_LIST names (`dog cluster format -b` with an unknown name
# prints it): Sheepdog 1.0's drivers in the order C sheep lists them. farm
# is sheepblk's own; MAKE_FS takes it but the list leaves it out, so dog
# shows what it shows against C sheep (Sheepdog's test 101 compares it).
LISTED_BACKENDS = ("tree", "plain")


def _known(kind: str) -> Callable[..., ObjectStore]:
    try:
        return BACKENDS[kind]
    except KeyError:
        raise UnknownBackend(f"unknown store backend {kind!r} "
                             f"(known: {', '.join(sorted(BACKENDS))})") from None


def open_store(kind: str, root: str, *, nosync: bool = False, flat: bool = False) -> ObjectStore:
    """A backend by its `dog cluster format -b` name (UnknownBackend for
    another name); `flat`: objects directly in `root`, not in root/obj."""
    return _known(kind)(root, nosync=nosync, flat=flat)


__all__ = [
    "AlreadyRunning", "BACKENDS", "LISTED_BACKENDS", "CorruptObject", "EpochStore", "FarmStore", "MdStore", "InvalidRange", "NoObject", "NoSpace",
    "NodeConfig", "ObjectStore", "PidLock", "PlainStore", "StoreError", "StoreIOError", "TreeStore",
    "UnknownBackend", "Unsupported", "load_node_space", "open_node_store", "open_store",
    "save_node_space", "write_atomic",
]


def open_node_store(kind: str, disks: list[Path], *, nosync: bool = False) -> MdStore:
    """A node's store: `kind` backends on one or more disks (see md.py),
    each disk holding its objects directly, as Sheepdog's do. An unknown
    kind (a config from elsewhere) is UnknownBackend, raised before any
    disk is touched."""
    _known(kind)
    return MdStore(disks, kind, lambda k, p: open_store(k, str(p), nosync=nosync, flat=True))
