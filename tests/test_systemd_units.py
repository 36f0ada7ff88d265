"""The systemd units of contrib/systemd pass `systemd-analyze verify`, and
their commands run a node, an NBD export and a sheepfs mount.

The units name /opt/sheepblk (the install location the README documents);
verify checks that every ExecStart binary exists, so the test copies the
units with /opt/sheepblk pointing at this checkout and its .venv: the
commands verify sees are the real ones, not stand-ins. Verify exits 0 on
warnings (an unknown key, a bad value it ignores), so any output fails too.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import logcheck
import pytest
from conftest import free_port, wait_for, wait_port
from test_nbd_plugin import nbd_probe

from sheepblk.client import SheepClient

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "contrib" / "systemd"
VENV_BIN = Path(sys.executable).parent
INSTANCES = {
    "sheep@.service": "sheep@var-lib-sheepblk.service",
    "sheepfs@.service": "sheepfs@mnt-sheep.service",
    "sheepblk-nbd@.service": "sheepblk-nbd@Alice.service",
    "sheepblk.target": "sheepblk.target",
}

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze not installed (package systemd)")


def localized(dest: Path) -> None:
    """Copy the units into `dest` with the install prefix made this checkout."""
    for unit in INSTANCES:
        text = (UNITS / unit).read_text()
        text = text.replace("/opt/sheepblk/.venv/bin", str(VENV_BIN))
        text = text.replace("/opt/sheepblk", str(ROOT))
        (dest / unit).write_text(text)


def verify(dest: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no",
                           *(f"./{n}" for n in names)],
                          cwd=dest, capture_output=True, text=True, timeout=120)


def test_units_exist_and_name_the_install_prefix() -> None:
    for unit in INSTANCES:
        assert "/opt/sheepblk" in (UNITS / unit).read_text() or unit.endswith(".target")
    assert (UNITS / "sheepblk.default").exists()


@pytest.mark.parametrize("unit", sorted(INSTANCES))
def test_unit_verifies_clean(tmp_path: Path, unit: str) -> None:
    localized(tmp_path)
    got = verify(tmp_path, [INSTANCES[unit]])
    assert got.returncode == 0, got.stderr
    assert got.stdout + got.stderr == "", got.stdout + got.stderr


def test_verify_catches_a_missing_binary_and_a_bad_key(tmp_path: Path) -> None:
    """The check above is only worth something if verify does complain."""
    localized(tmp_path)
    unit = tmp_path / "sheep@.service"
    unit.write_text(unit.read_text().replace(str(VENV_BIN / "sheep"), "/nonexistent/sheep"))
    assert verify(tmp_path, [INSTANCES["sheep@.service"]]).returncode != 0
    localized(tmp_path)
    unit.write_text(unit.read_text() + "Bogus=1\n")
    got = verify(tmp_path, [INSTANCES["sheep@.service"]])
    assert "Bogus" in got.stderr


def test_store_instance_is_the_escaped_path() -> None:
    """`systemd-escape -p` gives the instance the README tells users to enable."""
    got = subprocess.run(["systemd-escape", "-p", "/var/lib/sheepblk"],
                         capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "var-lib-sheepblk"
    back = subprocess.run(["systemd-escape", "-u", "-p", "var-lib-sheepblk"],
                          capture_output=True, text=True, check=True)
    assert back.stdout.strip() == "/var/lib/sheepblk"


# ---- the units' commands, run as systemd would run them ----


def unit_env(text: str, override: dict[str, str]) -> dict[str, str]:
    """Environment= assignments of a unit, then `override` (what
    /etc/default/sheepblk would set)."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("Environment="):
            for item in shlex.split(line.split("=", 1)[1]):
                key, _, value = item.partition("=")
                env[key] = value
    env.update(override)
    return env


def commands(text: str, key: str, instance: str, env: dict[str, str]) -> list[list[str]]:
    """Each `key=` line of a unit as the argv systemd would run: specifiers
    %i (escaped instance), %I (unescaped) and %f (unescaped path); `${VAR}`
    one word, `$VAR` split on white space (systemd.service(5))."""
    unescaped = subprocess.run(["systemd-escape", "-u", instance], capture_output=True,
                               text=True, check=True).stdout.strip()
    spec = {"%i": instance, "%I": unescaped, "%f": "/" + unescaped.lstrip("/")}
    out = []
    for line in text.splitlines():
        if not line.startswith(key + "="):
            continue
        argv: list[str] = []
        for word in shlex.split(line.split("=", 1)[1].lstrip("+-@:!")):
            for s, v in spec.items():
                word = word.replace(s, v)
            if re.fullmatch(r"\$[A-Za-z_]\w*", word):
                argv += env.get(word[1:], "").split()
            else:
                argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
        if argv:
            out.append(argv)
    return out


def escape_path(path: Path) -> str:
    return subprocess.run(["systemd-escape", "-p", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def start(argv: list[str], err: Path, kind: logcheck.Kind) -> subprocess.Popen[bytes]:
    logcheck.watch(err, kind)
    with open(err, "wb") as f:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=f)


def stopped(proc: subprocess.Popen[bytes], err: Path) -> int:
    """SIGTERM (systemd's KillSignal), then its exit status."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        rc = proc.wait(30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    logcheck.collect(err)
    return rc


needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("nbdkit", "nbdcopy", "fusermount3"))
    or not os.path.exists("/dev/fuse"),
    reason="needs nbdkit, nbdcopy (libnbd-bin) and FUSE")


@needs_tools
def test_unit_commands_run_a_node_an_export_and_a_mount(tmp_path: Path) -> None:
    """sheep@, sheepblk-nbd@ and sheepfs@'s ExecStart/ExecStop lines, with
    /run/sheepblk in the test's directory and the defaults a
    /etc/default/sheepblk would override, run a node, export a VDI (its
    pid file written, bytes in through nbdcopy) and mount sheepfs (the
    volume reads those bytes; ExecStop unmounts and sheepfs exits 0);
    SIGTERM ends sheep and nbdkit with status 0, which Restart=on-failure
    does not restart."""
    units = tmp_path / "units"
    units.mkdir()
    localized(units)
    run = tmp_path / "run"
    run.mkdir()  # RuntimeDirectory=sheepblk
    port = free_port()
    store = tmp_path / "store"
    store.mkdir()
    settings = {"SHEEP_CLUSTER": f"local:{tmp_path}/shm", "SHEEP_OPTS": f"-p {port}",
                "SHEEPFS_OPTS": f"-p {port}", "NBD_PLUGIN_OPTS": f"address=127.0.0.1:{port}"}

    def unit(name: str, key: str, instance: str) -> list[list[str]]:
        text = (units / name).read_text().replace("/run/sheepblk", str(run))
        return commands(text, key, instance, unit_env(text, settings))

    (sheep_argv,) = unit("sheep@.service", "ExecStart", escape_path(store))
    assert sheep_argv[-1] == str(store) and "-f" in sheep_argv
    sheep = start(sheep_argv, tmp_path / "sheep.err", logcheck.SHEEP_STDERR)
    try:
        wait_port(port, sheep)
        with SheepClient("127.0.0.1", port) as c:
            c.make_fs(copies=1)
            c.create_vdi("Alice", 4 << 20)

        (nbd_argv,) = unit("sheepblk-nbd@.service", "ExecStart", "Alice")
        nbd = start(nbd_argv, tmp_path / "nbdkit.err", logcheck.NBDKIT_STDERR)
        try:
            sock = run / "Alice.sock"
            def listening() -> bool:
                nbd_probe(sock)  # raises until nbdkit answers
                return True

            wait_for(listening, "nbdkit listening", timeout=30)
            assert (run / "Alice.pid").read_text().strip() == str(nbd.pid)
            data = os.urandom(1 << 20)
            (tmp_path / "disk.raw").write_bytes(data)
            subprocess.run(["nbdcopy", str(tmp_path / "disk.raw"),
                            f"nbd+unix:///?socket={sock}"], check=True, timeout=60)
        finally:
            assert stopped(nbd, tmp_path / "nbdkit.err") == 0

        mnt = tmp_path / "mnt"
        instance = escape_path(mnt)
        for argv in unit("sheepfs@.service", "ExecStartPre", instance):
            subprocess.run(argv, check=True)
        (fs_argv,) = unit("sheepfs@.service", "ExecStart", instance)
        fs = start(fs_argv, tmp_path / "sheepfs.err", logcheck.STDERR)
        try:
            wait_for(lambda: (mnt / "volume" / "Alice").exists(), "sheepfs mounted",
                     timeout=30)
            with open(mnt / "volume" / "Alice", "rb") as f:
                assert f.read(len(data)) == data
            for argv in unit("sheepfs@.service", "ExecStop", instance):
                subprocess.run(argv, check=True, timeout=60)
            assert fs.wait(30) == 0
        finally:
            if fs.poll() is None:
                subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            stopped(fs, tmp_path / "sheepfs.err")
    finally:
        assert stopped(sheep, tmp_path / "sheep.err") == 0
