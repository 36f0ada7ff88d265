"""The protocol client every frontend uses (dog, nbdkit plugin, sheepfs).

Standard library only: Debian's nbdkit embeds Debian's /usr/bin/python3,
which has none of our virtualenv's packages.
"""

from .connection import Connection, address_text, parse_address
from .errors import ClientError, NetworkError, SheepdogError
from .hyper import HyperTree, SparseIndex, index_items, index_owner
from .pipeline import PipelinedConnection
from .pool import ConnectionPool, PipelinedPool
from .sheep import SheepClient, VdiInfo
from .vdi import Extent, ReadOnlyError, Vdi, split

__all__ = [
    "ClientError", "Connection", "ConnectionPool", "Extent", "HyperTree", "NetworkError",
    "PipelinedConnection", "PipelinedPool", "ReadOnlyError", "SheepClient", "SheepdogError", "SparseIndex", "Vdi", "VdiInfo",
    "address_text", "index_items", "index_owner", "parse_address", "split",
]
