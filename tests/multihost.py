"""Several hosts for a test: network namespaces on one bridge, made and
removed by the test (root, `ip` and, for partitions between hosts,
`nft`).

    root namespace (the test, its clients)
        bridge sbmTAG: 10.A.B.1/24, fdXX::1/64
          |-- veth sbmTAGh0 <-> eth0 in netns sbm-TAG-NAME0: 10.A.B.10/24, fdXX::a/64
          |-- veth sbmTAGh1 <-> eth0 in netns sbm-TAG-NAME1: 10.A.B.11/24, fdXX::b/64
          ...

The /24 is a random one of 10.64.0.0-10.249.255.0 that no interface here
uses; the /64 a random one of fd00::/8. `make(names, networks=2)` gives
every host a second interface (eth1, 10.C.D.10+i/24) on a second bridge
(the root namespace is 10.C.D.1 there), as a storage network beside a
client network. Traffic goes only between these
addresses (and each namespace's own loopback). IPv6 addresses skip
duplicate address detection, so they are usable at once.

Two ways to cut hosts apart, both undone by `heal`:

- `link_down(host)`: the bridge end of the host's veth goes down. The host
  reaches nobody and nobody reaches it, the root namespace's clients
  included: a host whose cable was pulled. Its packets vanish (no reset,
  no ICMP), as on a real network.
- `split(side_a, side_b)`: nftables in each host's own namespace drops
  what arrives from the other side (input only, so senders see silence,
  not EPERM). The root namespace keeps reaching both sides: clients can
  write through either half of a split cluster, which is what a split
  brain needs. The tables live in the namespaces, so the root namespace's
  firewall is never touched and a namespace's removal removes them.

Every `ip`/`nft` call is bounded by IP_TIMEOUT. `Hosts.remove` removes
every namespace and link this object made (a namespace's removal takes
its veth pair with it), whatever state the test left them in.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field

from netns import exec_prefix, run_in

IP_TIMEOUT = 10.0  # a wedged netlink call fails the test instead of hanging it
FIRST_HOST = 10  # host i has address .FIRST_HOST+i in the /24 (and ::FIRST_HOST+i)
TABLE = "sbm_partition"


def missing(nft: bool = True) -> str | None:
    """Why hosts cannot be made here, or None."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if nft and shutil.which("nft") is None:
        return "no `nft` command (Debian's nftables; scripts/setup.sh --test installs it)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=IP_TIMEOUT)
    if probe.returncode != 0:
        return f"`ip netns` fails: {probe.stderr.decode().strip()}"
    return None


def run(*args: str, check: bool = True, input: bytes | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    """One bounded `ip`/`nft` command; a failure raises with its stderr."""
    done = subprocess.run(list(args), capture_output=True, timeout=IP_TIMEOUT, input=input)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.decode().strip()}")
    return done


def _used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = run("ip", "-o", "addr", "show").stdout.decode()
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in out.splitlines():
        words = line.split()
        for key in ("inet", "inet6"):
            if key in words:
                nets.append(ipaddress.ip_interface(words[words.index(key) + 1]).network)
    return nets


@dataclass
class Host:
    """One namespace: a machine with one interface (eth0) on the bridge."""

    index: int
    name: str
    netns: str
    veth: str  # the bridge end, in the root namespace
    addr: str  # IPv4
    addr6: str
    # Its address on each further network (make(..., networks=N)): eth1, ...
    more: list[str] = field(default_factory=list)

    def exec_prefix(self) -> list[str]:
        """Run a command on this host: this, then the command."""
        return exec_prefix(self.netns)

    def run(self, *args: str, timeout: float = 120.0, input: bytes | None = None
            ) -> subprocess.CompletedProcess[bytes]:
        """A command run to its end on this host."""
        return run_in(self.netns, *args, timeout=timeout, input=input)

    def __str__(self) -> str:
        return f"{self.name}({self.addr})"


@dataclass
class Hosts:
    tag: str
    bridge: str
    net: ipaddress.IPv4Network
    net6: ipaddress.IPv6Network
    hosts: list[Host] = field(default_factory=list)
    # Further networks (a second interface on every host): their /24s;
    # the root namespace is .1 on each.
    more: list[ipaddress.IPv4Network] = field(default_factory=list)
    _made: list[tuple[str, str]] = field(default_factory=list)  # (kind, name), in order
    _split: set[int] = field(default_factory=set)  # hosts holding a partition table
    _down: set[int] = field(default_factory=set)

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge (where clients are)."""
        return str(self.net[1])

    @property
    def gateway6(self) -> str:
        return str(self.net6[1])

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __len__(self) -> int:
        return len(self.hosts)

    # ---- partitions ----

    def link_down(self, host: Host) -> None:
        """Pull the host's cable (the bridge end of its veth)."""
        run("ip", "link", "set", host.veth, "down")
        self._down.add(host.index)

    def link_up(self, host: Host) -> None:
        run("ip", "link", "set", host.veth, "up")
        self._down.discard(host.index)

    def split(self, side_a: list[Host], side_b: list[Host]) -> None:
        """Drop every packet between the two sides (both ways); each side
        still reaches itself and the root namespace."""
        for mine, theirs in ((side_a, side_b), (side_b, side_a)):
            v4 = ", ".join(h.addr for h in theirs)
            v6 = ", ".join(h.addr6 for h in theirs)
            rules = (f"table inet {TABLE} {{\n"
                     f"  chain input {{ type filter hook input priority 0; policy accept;\n"
                     f"    ip saddr {{ {v4} }} drop\n"
                     f"    ip6 saddr {{ {v6} }} drop\n  }}\n}}\n")
            for h in mine:
                if h.index in self._split:
                    raise RuntimeError(f"{h} is split already: heal first")
                run("ip", "netns", "exec", h.netns, "nft", "-f", "-", input=rules.encode())
                self._split.add(h.index)

    def heal(self) -> None:
        """Undo every partition: links up, partition tables gone."""
        for i in sorted(self._down):
            self.link_up(self.hosts[i])
        for i in sorted(self._split):
            run("ip", "netns", "exec", self.hosts[i].netns, "nft", "delete", "table", "inet",
                TABLE)
        self._split.clear()

    @property
    def partitioned(self) -> bool:
        return bool(self._down or self._split)

    # ---- teardown ----

    def remove(self) -> None:
        """Remove what was made, last first; never raises (a teardown step)."""
        for kind, name in reversed(self._made):
            if kind == "netns":
                run("ip", "netns", "del", name, check=False)
            else:
                run("ip", "link", "del", name, check=False)
        self._made.clear()


def _add_network(hs: Hosts, k: int, net: ipaddress.IPv4Network) -> None:
    bridge = f"sbm{hs.tag}b{k}"
    run("ip", "link", "add", "name", bridge, "type", "bridge", "forward_delay", "0",
        "stp_state", "0")
    hs._made.append(("link", bridge))
    run("ip", "addr", "add", f"{net[1]}/24", "dev", bridge)
    run("ip", "link", "set", bridge, "up")
    hs.more.append(net)
    for host in hs.hosts:
        veth, inner = f"sbm{hs.tag}h{host.index}n{k}", f"eth{k}"
        addr = str(net[FIRST_HOST + host.index])
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}x")
        hs._made.append(("link", veth))
        run("ip", "link", "set", f"{veth}x", "netns", host.netns)
        run("ip", "link", "set", veth, "master", bridge)
        run("ip", "link", "set", veth, "up")
        ns = ["ip", "-n", host.netns]
        run(*ns, "link", "set", f"{veth}x", "name", inner)
        run(*ns, "addr", "add", f"{addr}/24", "dev", inner)
        run(*ns, "link", "set", inner, "up")
        host.more.append(addr)


def wait_reachable(addr: str, port: int, timeout: float = 30.0,
                   prefix: list[str] | None = None) -> None:
    """Until something listens on addr:port (seen from the root namespace)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((addr, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answers on {addr}:{port} after {timeout}s") from None
            time.sleep(0.1)


def _free_net(used: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
              rng: random.Random) -> ipaddress.IPv4Network:
    while True:
        net = ipaddress.IPv4Network(((10 << 24) | (rng.randrange(64, 250) << 16)
                                     | (rng.randrange(256) << 8), 24))
        if not any(net.overlaps(u) for u in used if u.version == 4):
            used.append(net)
            return net


def make(names: list[str], networks: int = 1) -> Hosts:
    """A host of each name on one new bridge, as the module says, and on
    `networks - 1` more (IPv4 only: eth1, eth2... on bridges of their own,
    as a storage network beside a client network); everything made is
    removed again if a step fails."""
    used = _used_networks()
    rng = random.SystemRandom()
    net = _free_net(used, rng)
    net6 = ipaddress.IPv6Network(((0xFD << 120) | (rng.getrandbits(56) << 64), 64))
    tag = f"{rng.getrandbits(24):06x}"
    hs = Hosts(tag=tag, bridge=f"sbm{tag}br", net=net, net6=net6)
    try:
        run("ip", "link", "add", "name", hs.bridge, "type", "bridge", "forward_delay", "0",
            "stp_state", "0")
        hs._made.append(("link", hs.bridge))
        run("ip", "addr", "add", f"{hs.gateway}/24", "dev", hs.bridge)
        run("ip", "addr", "add", f"{hs.gateway6}/64", "dev", hs.bridge, "nodad")
        run("ip", "link", "set", hs.bridge, "up")
        for i, name in enumerate(names):
            host = Host(i, name, f"sbm-{tag}-{name}", f"sbm{tag}h{i}", str(net[FIRST_HOST + i]),
                        str(net6[FIRST_HOST + i]))
            run("ip", "netns", "add", host.netns)
            hs._made.append(("netns", host.netns))
            run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", f"{host.veth}n")
            hs._made.append(("link", host.veth))
            run("ip", "link", "set", f"{host.veth}n", "netns", host.netns)
            run("ip", "link", "set", host.veth, "master", hs.bridge)
            run("ip", "link", "set", host.veth, "up")
            ns = ["ip", "-n", host.netns]
            run(*ns, "link", "set", f"{host.veth}n", "name", "eth0")
            run(*ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
            run(*ns, "addr", "add", f"{host.addr6}/64", "dev", "eth0", "nodad")
            run(*ns, "link", "set", "eth0", "up")
            run(*ns, "link", "set", "lo", "up")
            hs.hosts.append(host)
        for k in range(1, networks):
            _add_network(hs, k, _free_net(used, rng))
    except BaseException:
        hs.remove()
        raise
    return hs
