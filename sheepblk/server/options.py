"""How a sheep was started (`sheep` command-line options), as the daemon
and the ops read them."""

from __future__ import annotations

import socket
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
    # Where to serve Prometheus metrics (host, port), if anywhere.
    metrics: tuple[str, int] | None = None


def default_zone(addr: str) -> int:
    """As Sheepdog: the last four bytes of the address, when none is given."""
    from ..proto.node import addr_to_bytes

    return int.from_bytes(addr_to_bytes(addr)[12:16], "little")


WILDCARDS = ("0.0.0.0", "::", "")


def announced_address(opts: Options) -> str:
    """The address this sheep announces to the others: -y, else -b, else
    (a wildcard -b) what C sheep's cluster drivers pick: 127.0.0.1 for
    the local driver (one machine), for corosync this host's address in
    corosync's node list (as C sheep), and for ZooKeeper an address of
    this host that the others can reach. C sheep takes its first non-loopback
    interface's; we take the one this host reaches ZooKeeper from (the
    network every sheep shares), 127.0.0.1 only if none of the ensemble
    can be routed to. A `-b ::` prefers an IPv6 route."""
    addr = opts.myaddr or opts.bindaddr
    if addr not in WILDCARDS:
        return addr
    if opts.cluster.partition(":")[0] == "corosync":
        from ..cluster.corosync_cfg import local_address

        got = local_address()
        if got:
            return got
    if opts.cluster.startswith("zookeeper:"):
        from ..cluster.zookeeper import parse_spec

        try:
            hosts = parse_spec(opts.cluster.partition(":")[2])[0]
        except ValueError:
            hosts = ""
        for item in filter(None, hosts.split(",")):
            got = _route_from(item, prefer6=addr == "::")
            if got:
                return got
    return "127.0.0.1"


def _route_from(host_port: str, *, prefer6: bool) -> str:
    """The local address the kernel would send from to HOST[:PORT] (a
    UDP connect: nothing is sent), or ""."""
    host, sep, port = host_port.rpartition(":")
    if not sep or "]" in port or (host.count(":") and not host.startswith("[")):
        host, port = host_port, "2181"  # no port, or a bare IPv6 address
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_DGRAM)
    except (OSError, ValueError):
        return ""
    infos.sort(key=lambda i: (i[0] != socket.AF_INET6) if prefer6 else 0)
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as s:
            try:
                s.connect(sockaddr)
            except OSError:
                continue
            local = str(s.getsockname()[0]).split("%")[0]
            if local not in WILDCARDS:
                return local
    return ""
