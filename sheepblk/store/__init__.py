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

BACKENDS: dict[str, Callable[..., ObjectStore]] = {"plain": PlainStore, "farm": FarmStore}


def _known(kind: str) -> Callable[..., ObjectStore]:
    try:
        return BACKENDS[kind]
    except KeyError:
        raise UnknownBackend(f"unknown store backend {kind!r} "
                             f"(known: {', '.join(sorted(BACKENDS))})") from None


def open_store(kind: str, root: str, *, nosync: bool = False) -> ObjectStore:
    """A backend by its `dog cluster format -b` name (UnknownBackend for
    another name)."""
    return _known(kind)(root, nosync=nosync)


__all__ = [
    "AlreadyRunning", "BACKENDS", "CorruptObject", "EpochStore", "FarmStore", "MdStore", "InvalidRange", "NoObject", "NoSpace",
    "NodeConfig", "ObjectStore", "PidLock", "PlainStore", "StoreError", "StoreIOError",
    "UnknownBackend", "Unsupported", "load_node_space", "open_node_store", "open_store",
    "save_node_space", "write_atomic",
]


def open_node_store(kind: str, disks: list[Path], *, nosync: bool = False) -> MdStore:
    """A node's store: `kind` backends on one or more disks (see md.py).
    An unknown kind (a config from elsewhere) is UnknownBackend, raised
    before any disk is touched."""
    _known(kind)
    return MdStore(disks, kind, lambda k, p: open_store(k, str(p), nosync=nosync))
