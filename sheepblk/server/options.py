"""How a sheep was started (`sheep` command-line options), as the daemon
and the ops read them."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path


@dataclass
class Options:
    store_dir: Path
    port: int = 7000
    bindaddr: str = "127.0.0.1"
    myaddr: str | None = None
    zone: int | None = None
    vnodes: int | None = None
    gateway: bool = False  # a gateway-only node: no objects of its own
    nosync: bool = False
    cluster: str = "local"
    # Networks besides this host and the cluster's members that may send
    # the ops that format, stop or reshape the cluster (admission.py).
    admin_from: tuple[IPv4Network | IPv6Network, ...] = ()


def default_zone(addr: str) -> int:
    """As Sheepdog: the last four bytes of the address, when none is given."""
    from ..proto.node import addr_to_bytes

    return int.from_bytes(addr_to_bytes(addr)[12:16], "little")
