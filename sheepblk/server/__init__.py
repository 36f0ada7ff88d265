"""The sheep daemon: connections, gateway, peer ops, cluster ops."""

from .daemon import serve
from .node import Options, Sheep

__all__ = ["Options", "Sheep", "serve"]
