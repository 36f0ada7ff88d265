"""LockLeases bookkeeping, without sockets (see lock_lease.py for why)."""

from __future__ import annotations

from sheepblk.server.lock_lease import LockLeases, Release, host_of


def test_host_of() -> None:
    assert host_of("10.0.0.1:5555") == "10.0.0.1"
    assert host_of("[::1]:7000") == "::1"
    assert host_of("") == ""


def test_qemu_session_outlives_the_lock_socket() -> None:
    ll = LockLeases()
    ll.opened("io", "h:1")  # get_sheep_fd(), before the lock
    ll.opened("lock", "h:2")
    ll.locked("lock", 7, 0)
    assert ll.closed("lock") == []  # the I/O socket is pending
    ll.opened("tmp", "h:3")
    ll.touch("tmp", 7)  # the inode read
    assert ll.closed("tmp") == []
    ll.touch("io", 7)
    assert ll.closed("io") == [Release("lock", 7, 0)]  # QEMU died


def test_other_vm_and_other_host_do_not_hold_it() -> None:
    ll = LockLeases()
    ll.opened("other-vm", "h:1")
    ll.opened("elsewhere", "x:1")
    ll.opened("lock", "h:2")
    ll.locked("lock", 7, 0)
    ll.touch("elsewhere", 7)  # another host's reads do not join
    assert ll.closed("lock") == []  # other-vm is pending
    assert ll.touch("other-vm", 8) == [Release("lock", 7, 0)]


def test_explicit_release_ends_the_session() -> None:
    ll = LockLeases()
    ll.opened("lock", "h:1")
    ll.locked("lock", 7, 0)
    ll.released("another-socket", 7, 0)  # sd_close()
    assert not ll.active and ll.closed("lock") == []
