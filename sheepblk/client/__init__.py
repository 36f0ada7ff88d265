"""The protocol client every frontend uses (dog, nbdkit plugin, sheepfs).

Standard library only: Debian's nbdkit embeds Debian's /usr/bin/python3,
which has none of our virtualenv's packages.
"""

from .connection import Connection, parse_address
from .errors import ClientError, NetworkError, SheepdogError
from .hyper import HyperTree, SparseIndex, index_items, index_owner
from .pool import ConnectionPool
from .sheep import SheepClient, VdiInfo
from .vdi import Extent, ReadOnlyError, Vdi, split

__all__ = [
    "ClientError", "Connection", "ConnectionPool", "Extent", "HyperTree", "NetworkError",
    "ReadOnlyError", "SheepClient", "SheepdogError", "SparseIndex", "Vdi", "VdiInfo",
    "index_items", "index_owner", "parse_address", "split",
]
