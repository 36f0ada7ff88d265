"""`dog node recovery set-throttle / get-throttle` (SD_OP_SET_RECOVERY /
GET_RECOVERY) and a recovery under a throttle: held back by it, progress
shown by `dog node recovery`, client reads served meanwhile, finished once
the throttle is loosened. No timing thresholds: the throttle used holds
recovery for ten minutes per object, so what is checked does not race it."""

from __future__ import annotations

import os
import subprocess

from conftest import SheepFactory, SheepProcess, bin_path, run_dog, wait_for

from sheepblk.client import Vdi
from sheepblk.proto import Op, RecoveryThrottle
from sheepblk.proto.records import RECOVERY_THROTTLE_SIZE

MiB = 1 << 20
WAIT = 120.0
HOLD_MS = 600_000  # one object per ten minutes: recovery stays held


def get_throttle(node: SheepProcess) -> str:
    return run_dog(node, "node", "recovery", "get-throttle").stdout.decode().strip()


def test_set_then_get_throttle(one_node: SheepProcess) -> None:
    assert get_throttle(one_node) == "max (0), interval (0)"
    run_dog(one_node, "node", "recovery", "set-throttle", "4", "250")  # dog's form
    assert get_throttle(one_node) == "max (4), interval (250)"
    run_dog(one_node, "node", "recovery", "set-throttle", "--max-exec-count", "7",
            "--interval", "1000")
    assert get_throttle(one_node) == "max (7), interval (1000)"
    with one_node.client() as c:  # the wire layout, as Sheepdog's dog reads it
        _, out = c.request(Op.GET_RECOVERY, data_length=RECOVERY_THROTTLE_SIZE)
        assert RecoveryThrottle.unpack(out) == RecoveryThrottle(7, 1000, True)
    bad = run_dog(one_node, "node", "recovery", "set-throttle", "3", "0", check=False)
    assert bad.returncode != 0 and b"Invalid" in bad.stderr
    assert get_throttle(one_node) == "max (7), interval (1000)"
    run_dog(one_node, "node", "recovery", "set-throttle", "0", "0")
    assert get_throttle(one_node) == "max (0), interval (0)"


def progress(node: SheepProcess) -> tuple[int, int] | None:
    with node.client(pool_size=1) as c:
        st = c.stat_recovery()
    return (st.nr_finished, st.nr_total) if st.in_recovery else None


def dog_progress(node: SheepProcess) -> dict[str, tuple[int, int]]:
    """`dog node recovery -r`: host -> (finished, total) of nodes recovering."""
    out = run_dog(node, "node", "recovery", "-r").stdout.decode().split("\n")
    rows = [line.split() for line in out if line.strip()]
    return {r[1]: (int(r[4]), int(r[5])) for r in rows}


def test_recovery_under_a_throttle(sheep_factory: SheepFactory) -> None:
    nodes = sheep_factory.start(3)
    with nodes[0].client() as c:
        c.make_fs(copies=2)
        c.create_vdi("T", 48 * MiB, block_size_shift=20)  # 48 objects of 1 MiB
    data = os.urandom(48 * MiB)
    with nodes[0].client() as c, Vdi(c, "T") as v:
        v.pwrite(data, 0)
    for n in nodes[:2]:
        run_dog(n, "node", "recovery", "set-throttle", "1", str(HOLD_MS))
    nodes[2].kill9()
    live = nodes[:2]
    # Each survivor pulls the objects it shared with the dead node: one is
    # started, then the throttle holds the rest.
    # (0 of 0 while a survivor still gathers its list: wait for the list too)
    wait_for(lambda: all((p := progress(n)) is not None and p[1] > 0 for n in live),
             "recovery started", WAIT)
    before = {n.port: progress(n) for n in live}
    for p in before.values():
        assert p is not None and p[0] < p[1]
    shown = dog_progress(live[0])
    assert {f"127.0.0.1:{n.port}" for n in live} <= set(shown)

    # Client reads during recovery succeed (an object a read needs is
    # recovered first, throttle or not), and the progress numbers move.
    with live[1].client() as c, Vdi(c, "T", writable=False) as v:
        assert v.pread(24 * MiB, 0) == data[:24 * MiB]
    after = {n.port: progress(n) for n in live}
    assert any(a is None or b is None or a[0] > b[0]
               for a, b in zip(after.values(), before.values(), strict=True))

    # Loosen the throttle: recovery finishes (no need to wait ten minutes).
    for n in live:
        run_dog(n, "node", "recovery", "set-throttle", "2", "1")
    wait_for(lambda: all(progress(n) is None for n in live), "recovery done", WAIT)
    with live[0].client() as c, Vdi(c, "T", writable=False) as v:
        assert v.pread(48 * MiB, 0) == data


def test_throttle_numbers_are_read_as_dog_reads_them(one_node: SheepProcess) -> None:
    """strtol's verdicts, which Sheepdog's test 107 pins: max is 0 .. 2^32-1,
    interval 0 .. 2^63-1, both zero or both not."""
    def set_throttle(mx: str, interval: str) -> subprocess.CompletedProcess[bytes]:
        # "--" so that "-1" is a value: the address options go before it.
        return subprocess.run([bin_path("dog"), "node", "recovery", "set-throttle", "-a",
                               "127.0.0.1", "-p", str(one_node.port), "--", mx, interval],
                              capture_output=True, timeout=60)

    def refused(mx: str, interval: str) -> str:
        out = set_throttle(mx, interval)
        assert out.returncode == 64, out
        return out.stderr.decode().strip()

    assert refused("4294967295", "9223372036854775808") == \
        "Invalid interval (9223372036854775808)"
    assert refused("4294967296", "9223372036854775807") == "Invalid max (4294967296)"
    assert refused("-1", "1") == "Invalid max (-1)"
    assert refused("1", "-2") == "Invalid interval (-2)"
    assert refused("0", "1") == "Invalid interval max (0), interval (1)"
    assert refused("1a", "1") == "Invalid max (1a)"
    assert get_throttle(one_node) == "max (0), interval (0)"
    assert set_throttle("4294967295", "9223372036854775807").returncode == 0
    assert get_throttle(one_node) == "max (4294967295), interval (9223372036854775807)"
    assert set_throttle("+0", " 0").returncode == 0
    assert get_throttle(one_node) == "max (0), interval (0)"
