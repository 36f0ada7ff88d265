"""Another host for a test: a network namespace joined to this one by a
veth pair, made and removed by the test (root and `ip netns` needed).

Addresses come from a random /29 of 10.0.0.0/8 that no interface here
uses, and a random /64 of fd00::/8:

    this host (root namespace)        the namespace ("the other host")
    10.A.B.C+1/30   fdXX::1/64        10.A.B.C+2/30   fdXX::2/64
    10.A.B.C+5/32   (a second address of this host, off the /30)
                                      fdXX::1:2/64 (a second address)

Traffic goes only between these addresses. IPv6 addresses skip duplicate
address detection, so they are usable at once.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field

# Every `ip` command is bounded: a wedged netlink call fails the test.
IP_TIMEOUT = 10.0


def missing() -> str | None:
    """Why a namespace cannot be made here, or None."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if os.geteuid() != 0:
        return "`ip netns` needs root"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=IP_TIMEOUT)
    if probe.returncode != 0:
        return f"`ip netns` fails: {probe.stderr.decode().strip()}"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", *args], capture_output=True, check=check, timeout=IP_TIMEOUT)


def _used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = _ip("-o", "addr", "show").stdout.decode()
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in out.splitlines():
        words = line.split()
        for key in ("inet", "inet6"):
            if key in words:
                nets.append(ipaddress.ip_interface(words[words.index(key) + 1]).network)
    return nets


def exec_prefix(netns: str) -> list[str]:
    """Run a command in namespace `netns`: this, then the command."""
    return ["ip", "netns", "exec", netns]


def run_in(netns: str, *args: str, timeout: float = 120.0, input: bytes | None = None
           ) -> subprocess.CompletedProcess[bytes]:
    """A command run to its end inside namespace `netns`, its output kept."""
    return subprocess.run([*exec_prefix(netns), *args], capture_output=True, input=input,
                          timeout=timeout)


@dataclass
class NetNs:
    name: str
    host_if: str  # the veth end in the root namespace
    host_addr: str  # this host's address on the link
    host_addr2: str  # another address of this host, outside `link`
    ns_addr: str  # the other host's address
    link: str  # the /30 both ends are in
    host6: str
    ns6: str
    ns6_2: str
    link6: str
    made: list[str] = field(default_factory=list)

    def exec_prefix(self) -> list[str]:
        """Run a command in the namespace: this, then the command."""
        return exec_prefix(self.name)

    def run(self, *args: str, timeout: float = 120.0, input: bytes | None = None
            ) -> subprocess.CompletedProcess[bytes]:
        """A command run to its end inside the namespace."""
        return run_in(self.name, *args, timeout=timeout, input=input)

    def remove(self) -> None:
        """Remove what was made (the pair goes with either of its ends)."""
        if "netns" in self.made:
            _ip("netns", "del", self.name, check=False)
        if "veth" in self.made:
            _ip("link", "del", self.host_if, check=False)
        self.made.clear()


def make() -> NetNs:
    """A namespace and its link, as the module says; removed again if any
    step fails."""
    used = _used_networks()
    rng = random.SystemRandom()
    while True:
        base = ipaddress.IPv4Address((10 << 24) | (rng.randrange(64, 250) << 16)
                                     | (rng.randrange(256) << 8) | (rng.randrange(32) << 3))
        block = ipaddress.IPv4Network(f"{base}/29")
        if not any(block.overlaps(n) for n in used if n.version == 4):
            break
    prefix6 = ipaddress.IPv6Network(((0xFD << 120) | (rng.getrandbits(56) << 64), 64))
    tag = f"{rng.getrandbits(32):08x}"
    ns = NetNs(name=f"sbt-{tag}", host_if=f"sbt{tag}h",
               host_addr=str(base + 1), host_addr2=str(base + 5), ns_addr=str(base + 2),
               link=f"{base}/30", host6=str(prefix6[1]), ns6=str(prefix6[2]),
               ns6_2=str(prefix6[0x10002]), link6=str(prefix6))
    peer_if = f"sbt{tag}n"
    try:
        _ip("netns", "add", ns.name)
        ns.made.append("netns")
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", peer_if)
        ns.made.append("veth")
        _ip("link", "set", peer_if, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_addr}/30", "dev", ns.host_if)
        _ip("addr", "add", f"{ns.host_addr2}/32", "dev", ns.host_if)
        _ip("addr", "add", f"{ns.host6}/64", "dev", ns.host_if, "nodad")
        _ip("link", "set", ns.host_if, "up")
        _ip("-n", ns.name, "addr", "add", f"{ns.ns_addr}/30", "dev", peer_if)
        _ip("-n", ns.name, "addr", "add", f"{ns.ns6}/64", "dev", peer_if, "nodad")
        _ip("-n", ns.name, "addr", "add", f"{ns.ns6_2}/64", "dev", peer_if, "nodad")
        _ip("-n", ns.name, "link", "set", peer_if, "up")
        _ip("-n", ns.name, "link", "set", "lo", "up")
    except BaseException:
        ns.remove()
        raise
    return ns
