"""The sheep daemon: connections, gateway, peer ops, cluster ops."""

from .daemon import serve
from .options import Options

__all__ = ["Options", "serve"]
