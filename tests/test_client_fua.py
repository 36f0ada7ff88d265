"""FUA writes (NBD's force unit access) are durable with what they depend on.

A FUA write goes without the cache flag, so its bytes are on stable storage
on return. When the object it lands in was allocated by a cached write that
no flush has covered yet, the object's creation and its index entry are not
durable, and after a crash the FUA bytes would be unreachable: the client
then flushes. Observed with a real sheep, by counting the flushes the
client sends.
"""

from __future__ import annotations

from conftest import SheepProcess

from sheepblk.client import SheepClient, Vdi

MIB = 1 << 20


class CountingClient(SheepClient):
    """The real client, counting SD_OP_FLUSH_VDI requests it sends."""

    flushes = 0

    def flush(self, vid: int = 0) -> None:
        CountingClient.flushes += 1
        super().flush(vid)


def test_fua_after_cached_allocation_flushes_once(one_node: SheepProcess) -> None:
    with one_node.client() as admin:
        admin.create_vdi("F", 16 * MIB)
    c = CountingClient("127.0.0.1", one_node.port)
    CountingClient.flushes = 0
    with c, Vdi(c, "F", lock=True, cache=True) as v:
        # The open flushed what earlier writers may have left (see Vdi).
        assert CountingClient.flushes == 1
        CountingClient.flushes = 0
        v.pwrite(b"a" * 4096, 0)  # cached: allocates object 0
        v.pwrite(b"b" * 4096, 4096, fua=True)  # same object, allocation not durable
        assert CountingClient.flushes == 1
        v.pwrite(b"c" * 4096, 8192, fua=True)  # flushed already: no second flush
        assert CountingClient.flushes == 1
        v.pwrite(b"d" * 4096, 4 * MIB, fua=True)  # FUA allocation is durable itself
        assert CountingClient.flushes == 1
        v.pwrite(b"e" * 4096, 8 * MIB)  # cached allocation of object 2
        v.flush()
        assert CountingClient.flushes == 2
        v.pwrite(b"f" * 4096, 8 * MIB + 4096, fua=True)  # covered by that flush
        assert CountingClient.flushes == 2
        assert bytes(v.pread(3 * 4096, 0)) == b"a" * 4096 + b"b" * 4096 + b"c" * 4096
