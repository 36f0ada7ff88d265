"""Who may change the cluster: the ops that format, stop, kill or reshape
it are taken only from this host, from cluster members and from the
networks `sheep --admin-from` names; every other op is open to whoever
reaches the port.

Why: Sheepdog's protocol has no authentication, so on a network of many
hosts any of them could format the cluster with one 48-byte header. This
does not make the wire safe (anyone who can connect still reads and
writes every VDI, and on a shared L2 an address can be spoofed): it stops
a stray or hostile host from destroying or stopping the cluster by
accident or on purpose. The README says what belongs in front of it.

What is checked is the peer address of the connection, once per admin
request (they are rare: the data path pays one set lookup).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable, Sequence

from ..proto import Op, Res
from .lock_lease import host_of

log = logging.getLogger("sheep.admission")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The answer a refused op gets. Sheepdog 1.0 has no "permission denied"
# code; NO_SUPPORT ("Operation is not supported") is the one whose text
# C dog prints as a plain failure ("Format failed: Operation is not
# supported") without retrying, and that says "this sheep will not do
# that" rather than blaming the request (INVALID_PARMS), the node's state
# (SHUTDOWN, KILLED, WAIT_*) or the cluster (CLUSTER_ERROR, SYSTEM_ERROR),
# any of which would send an operator looking for the wrong fault.
REFUSED = Res.NO_SUPPORT

# The peer name of a connection on the unix socket STORE/sock (see
# transport.SocketTransport.peer): only this host can reach it.
UNIX_PEER = "unix"

# Ops that change the cluster or a node rather than a VDI's data; each
# says what a stranger could do with it.
ADMIN_OPS: frozenset[int] = frozenset({
    Op.MAKE_FS,             # dog cluster format / snapshot load: empties every store
    Op.SHUTDOWN,            # dog cluster shutdown: stops every node
    Op.KILL_NODE,           # dog node kill: stops this node
    Op.FORCE_RECOVER,       # dog cluster recover force: runs without the missing nodes
    Op.ENABLE_RECOVER,      # dog cluster recover enable|disable: a disabled
    Op.DISABLE_RECOVER,     #   recovery leaves objects short of copies
    Op.ALTER_CLUSTER_COPY,  # dog cluster alter-copy: every VDI's redundancy
    Op.ALTER_VDI_COPY,      # dog vdi alter-copy: a VDI's redundancy (QEMU never sends it)
    Op.REWEIGHT,            # dog cluster reweight: a new epoch, objects move
    Op.SET_VNODES,          # dog node vnodes set: a new epoch, objects move
    Op.SET_RECOVERY,        # dog node recovery set-throttle: recovery's pace
    Op.SET_LOGLEVEL,        # dog node log level set: floods or silences the log
    Op.MD_PLUG,             # dog node md plug|unplug: this node's disks
    Op.MD_UNPLUG,
    Op.NOTIFY_VDI_ADD,      # snapshot load's registration of raw VDI ids on every node
    # Sheepdog's admin ops sheepblk does not serve (an unknown opcode is
    # refused first): named so that serving one later keeps it closed.
    Op.SNAPSHOT, Op.RESTORE, Op.CLEANUP, Op.TRACE_ENABLE, Op.TRACE_DISABLE,
    Op.FLUSH_DEL_CACHE, Op.DELETE_CACHE, Op.CACHE_PURGE,
})

# Every other op the op table serves, named so that a new op gets a
# decision (tests/test_admission.py checks the two sets cover the table):
# the data path QEMU, NBD, sheepfs and `dog vdi` use (VDI create, delete,
# snapshot and lock included), the peer ops members send each other (a
# stranger reaches the same data through the gateway ops anyway), the
# replica check of `dog vdi check`, and the read-only queries.
OPEN_OPS: frozenset[int] = frozenset({
    Op.CREATE_AND_WRITE_OBJ, Op.READ_OBJ, Op.WRITE_OBJ, Op.REMOVE_OBJ, Op.DISCARD_OBJ,
    Op.FLUSH_VDI,
    Op.NEW_VDI, Op.DEL_VDI, Op.LOCK_VDI, Op.RELEASE_VDI, Op.GET_VDI_INFO, Op.GET_VDI_ATTR,
    Op.READ_VDIS, Op.READ_DEL_VDIS, Op.GET_VDI_COPIES, Op.GET_CLUSTER_DEFAULT,
    Op.CREATE_AND_WRITE_PEER, Op.READ_PEER, Op.WRITE_PEER, Op.REMOVE_PEER, Op.FLUSH_PEER,
    Op.GET_HASH, Op.REPAIR_REPLICA,
    Op.GET_NODE_LIST, Op.STAT_SHEEP, Op.STAT_CLUSTER, Op.STAT_RECOVERY, Op.GET_EPOCH,
    Op.GET_STORE_LIST, Op.CLUSTER_INFO, Op.GET_LOGLEVEL, Op.GET_VNODES, Op.GET_RECOVERY,
    Op.GET_OBJ_LIST, Op.MD_INFO, Op.EXIST, Op.GET_DEPARTED, Op.STAT,
    Op.GET_CACHE_INFO,  # dog vdi cache info (no cache here: NO_SUPPORT)
})

# A refused peer is logged at most once per op this often (a host that
# retries in a loop must not fill the log), with the count left unsaid.
WARN_EVERY = 10.0
# Peers whose last warning is remembered; past this the memory starts over.
WARN_MEMORY = 1024


def parse_networks(spec: str) -> list[Network]:
    """`--admin-from`'s CIDR[,CIDR...] (IPv4 or IPv6; a bare address is
    one host). Host bits are allowed (10.1.2.1/30 means 10.1.2.0/30): the
    address of the host one stands on is what people type.

    Error handling: ValueError naming the item that is not a network."""
    nets: list[Network] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an IPv4 or IPv6 network: {item!r}") from None
    return nets


def peer_address(peer: str) -> Address | None:
    """The IP address of a connection's peer name ("HOST:PORT",
    "[V6]:PORT", "V6:PORT"), an IPv4-mapped IPv6 address as IPv4 and an
    IPv6 zone dropped; None for a name that holds no address."""
    return parse_address(host_of(peer))


def parse_address(host: str) -> Address | None:
    """An address as peer_address returns it, from a bare host string."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def host_owns(ip: Address) -> bool:
    """Whether `ip` is an address of this host (of its network namespace).

    Asks the kernel's routing table without sending anything: a datagram
    socket connected to one of our own addresses gets that same address
    as its source (the local route's), to any other address the source
    of the interface it would leave by. Why not a bind() probe: with
    net.ipv4.ip_nonlocal_bind set, bind() takes any address, and it
    takes broadcast addresses; the route is not fooled by either."""
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((str(ip), 9))
            mine = s.getsockname()[0]
    except OSError:  # no route to it at all: not ours
        return False
    return parse_address(mine) == ip


def may_administer(peer: str, *, members: Iterable[Address], admin_from: Sequence[Network],
                   owns: Callable[[Address], bool] = host_owns) -> bool:
    """Whether a connection from `peer` may send ADMIN_OPS: the unix
    socket, a loopback address, a member's address, an --admin-from
    network, or an address of this host (`owns`, asked last: it costs a
    syscall). A peer name that holds no address is refused."""
    if peer == UNIX_PEER:
        return True
    ip = peer_address(peer)
    if ip is None:
        return False
    if ip.is_loopback or ip in set(members):
        return True
    if any(ip in net for net in admin_from if net.version == ip.version):
        return True
    return owns(ip)


class Admission:
    """A node's gate for ADMIN_OPS: the decision (may_administer) and its
    warning, rate-limited per peer address and op. Holds no connection
    state: the caller passes the members it knows at the time."""

    def __init__(self, admin_from: Sequence[Network], *,
                 owns: Callable[[Address], bool] = host_owns,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.admin_from = list(admin_from)
        self._owns = owns
        self._clock = clock
        self._warned: dict[tuple[str, int], float] = {}

    def admits(self, opcode: int, peer: str, members: Iterable[Address]) -> bool:
        """True for an op anyone may send or an admin op from a peer that
        may administer; otherwise log a warning (naming op and peer) and
        return False."""
        if opcode not in ADMIN_OPS:
            return True
        if may_administer(peer, members=members, admin_from=self.admin_from, owns=self._owns):
            return True
        self._warn(opcode, peer)
        return False

    def _warn(self, opcode: int, peer: str) -> None:
        key = (host_of(peer), opcode)
        now = self._clock()
        last = self._warned.get(key)
        if last is not None and now - last < WARN_EVERY:
            return
        if len(self._warned) >= WARN_MEMORY:
            self._warned.clear()
        self._warned[key] = now
        log.warning("refusing %s from %s: only %s may administer the cluster",
                    Op(opcode).name, peer or "an unnamed peer", describe(self.admin_from))


def describe(admin_from: Sequence[Network]) -> str:
    """Who may administer, as a log line says it."""
    if not admin_from:
        return "this host and cluster members (sheep --admin-from adds networks)"
    return ("this host, cluster members and " + ",".join(map(str, admin_from))
            + " (sheep --admin-from)")
