"""dog's progress bars (cli/dog/progress.py): shown on a terminal (stderr on
a pseudo-terminal made here with the pty module), reaching 100%, and absent
when stderr is a pipe; the data on stdout is the same either way."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import threading
from pathlib import Path

from conftest import SheepFactory, SheepProcess, bin_path, run_dog, wait_for

MIB = 1 << 20
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


class Run:
    def __init__(self, rc: int, stdout: bytes, stderr: str) -> None:
        self.rc, self.stdout, self.stderr = rc, stdout, stderr


def dog(node: SheepProcess, *args: str, input: bytes | None = None, tty: bool,
        started: threading.Event | None = None) -> Run:
    """`dog ARGS` with stdout a pipe and stderr a pseudo-terminal (`tty`) or
    a pipe. What the terminal showed comes back as text, each carriage
    return a line break (the bar redraws its line with them)."""
    cmd = [bin_path("dog"), *args, "-a", "127.0.0.1", "-p", str(node.port)]
    if not tty:
        r = subprocess.run(cmd, input=input, capture_output=True, timeout=120)
        return Run(r.returncode, r.stdout, r.stderr.decode())
    master, slave = pty.openpty()
    seen = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last holder of the terminal closed it
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else
                                subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        if started is not None:
            started.set()
        out, _ = proc.communicate(input, timeout=180)
    finally:
        reader.join(30)
        os.close(master)
    text = ANSI.sub(b"", bytes(seen)).decode(errors="replace").replace("\r\n", "\n")
    return Run(proc.returncode, out, text.replace("\r", "\n"))


def bar_lines(text: str, label: str) -> list[str]:
    return [ln for ln in text.split("\n") if ln.startswith(label)]


def assert_full_bar(text: str, label: str) -> None:
    lines = bar_lines(text, label)
    assert lines, f"no {label!r} bar in {text!r}"
    assert "100%" in lines[-1], lines[-1]
    assert "#" in lines[-1]


def test_vdi_write_read_check_show_a_bar_on_a_terminal_only(one_node: SheepProcess) -> None:
    data = os.urandom(8 * MIB)
    run_dog(one_node, "vdi", "create", "P", "8M")
    w = dog(one_node, "vdi", "write", "P", input=data, tty=True)
    assert w.rc == 0, w.stderr
    assert_full_bar(w.stderr, "Writing")
    r = dog(one_node, "vdi", "read", "P", tty=True)
    assert r.rc == 0 and r.stdout == data
    assert_full_bar(r.stderr, "Reading")
    c = dog(one_node, "vdi", "check", "P", tty=True)
    assert c.rc == 0
    assert_full_bar(c.stderr, "Checking P")
    assert c.stdout.decode().strip().endswith("finish check&repair P")
    # Piped: no bar, the same bytes.
    p = dog(one_node, "vdi", "write", "P", input=data, tty=False)
    assert p.rc == 0 and p.stderr == ""
    p = dog(one_node, "vdi", "read", "P", tty=False)
    assert p.rc == 0 and p.stderr == "" and p.stdout == data
    # Input shorter than the VDI: the bar still ends at what was written.
    w = dog(one_node, "vdi", "write", "P", input=data[:MIB], tty=True)
    assert w.rc == 0
    assert_full_bar(w.stderr, "Writing")


def test_backup_restore_and_cluster_check_bars(one_node: SheepProcess) -> None:
    run_dog(one_node, "vdi", "create", "B", "8M")
    run_dog(one_node, "vdi", "write", "B", input=os.urandom(8 * MIB))
    run_dog(one_node, "vdi", "snapshot", "-s", "s1", "B")
    run_dog(one_node, "vdi", "write", "B", "4M", "512", input=b"z" * 512)
    run_dog(one_node, "vdi", "snapshot", "-s", "s2", "B")
    b = dog(one_node, "vdi", "backup", "-F", "s1", "-s", "s2", "B", tty=True)
    assert b.rc == 0
    assert_full_bar(b.stderr, "Backing up")
    piped = dog(one_node, "vdi", "backup", "-F", "s1", "-s", "s2", "B", tty=False)
    assert piped.stderr == "" and piped.stdout == b.stdout  # the bar is not in the stream
    r = dog(one_node, "vdi", "restore", "-s", "s1", "B", input=b.stdout, tty=True)
    assert r.rc == 0, r.stderr
    assert_full_bar(r.stderr, "Restoring")
    k = dog(one_node, "cluster", "check", tty=True)
    assert k.rc == 0
    assert_full_bar(k.stderr, "Checking B")
    assert "fix vdi B" in k.stdout.decode()
    assert dog(one_node, "cluster", "check", tty=False).stderr == ""


def test_cluster_snapshot_save_and_load_bars(one_node: SheepProcess, tmp_path: Path) -> None:
    run_dog(one_node, "vdi", "create", "S", "8M")
    run_dog(one_node, "vdi", "write", "S", input=os.urandom(8 * MIB))
    s = dog(one_node, "cluster", "snapshot", "save", "t1", str(tmp_path / "snap"), tty=True)
    assert s.rc == 0, s.stderr
    assert_full_bar(s.stderr, "Saving")
    p = dog(one_node, "cluster", "snapshot", "save", "t2", str(tmp_path / "snap"), tty=False)
    assert p.rc == 0 and p.stderr == ""
    ld = dog(one_node, "cluster", "snapshot", "load", "t1", str(tmp_path / "snap"), tty=True)
    assert ld.rc == 0, ld.stderr
    assert_full_bar(ld.stderr, "Loading")


HOLD_MS = 600_000  # one object per ten minutes: recovery stays held


def test_node_recovery_follow_bar(sheep_factory: SheepFactory) -> None:
    nodes = sheep_factory.start(3)
    with nodes[0].client() as c:
        c.make_fs(copies=2)
        c.create_vdi("R", 16 * MIB, block_size_shift=20)
    run_dog(nodes[0], "vdi", "write", "R", input=os.urandom(16 * MIB))
    for n in nodes[:2]:
        run_dog(n, "node", "recovery", "set-throttle", "1", str(HOLD_MS))
    nodes[2].kill9()
    survivor = nodes[0]

    def recovering() -> bool:
        with survivor.client(pool_size=1) as c:
            st = c.stat_recovery()
        return bool(st.in_recovery and st.nr_total)

    wait_for(recovering, "recovery started", 120)
    result: list[Run] = []
    started = threading.Event()
    t = threading.Thread(target=lambda: result.append(
        dog(survivor, "node", "recovery", "-P", tty=True, started=started)))
    t.start()
    try:
        started.wait(30)
        # Let the follower see the held recovery, then loosen the throttle.
        wait_for(lambda: not t.is_alive() or recovering(), "follower running", 30)
    finally:
        for n in nodes[:2]:
            run_dog(n, "node", "recovery", "set-throttle", "2", "1")
        t.join(180)
    (run,) = result
    assert run.rc == 0
    assert_full_bar(run.stderr, "Recovering")
