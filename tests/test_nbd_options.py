"""Unit tests of the nbdkit plugin's parameters, without nbdkit or a sheep.

Importing the plugin outside nbdkit works (the `nbdkit` module is absent
there), so option parsing is checked here in milliseconds; everything that
needs nbdkit and a cluster is in test_nbd_plugin.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sheepblk import nbd_plugin
from sheepblk.nbd_plugin import Options, StartupError

PLUGIN = Path(nbd_plugin.__file__).resolve()


def parsed(**kw: str) -> Options:
    o = Options()
    for k, v in kw.items():
        o.set(k, v)
    o.check()
    return o


def test_defaults() -> None:
    o = parsed(vdi="Alice")
    assert (o.vdi, o.host, o.port) == ("Alice", "127.0.0.1", 7000)
    assert o.writable and o.writeback and not o.shared and not o.snapshot
    assert o.connections == nbd_plugin.DEFAULT_CONNECTIONS


def test_address_forms() -> None:
    assert (parsed(vdi="a", address="10.0.0.2").host, parsed(vdi="a", address="10.0.0.2").port) \
        == ("10.0.0.2", 7000)
    o = parsed(vdi="a", address="127.0.0.1:7001")
    assert (o.host, o.port) == ("127.0.0.1", 7001)
    o = parsed(vdi="a", address="[::1]:7002")
    assert (o.host, o.port) == ("::1", 7002)
    for bad in ("host:notaport", "host:0", "host:70000"):
        with pytest.raises(StartupError, match="address="):
            parsed(vdi="a", address=bad)


def test_snapshot_by_id_or_tag_is_read_only() -> None:
    o = parsed(vdi="a", snapshot="3")
    assert (o.snapid, o.tag, o.writable) == (3, "", False)
    o = parsed(vdi="a", snapshot="before-upgrade")
    assert (o.snapid, o.tag, o.writable) == (0, "before-upgrade", False)


def test_shared_is_read_only() -> None:
    assert not parsed(vdi="a", shared="true").writable
    assert parsed(vdi="a", shared="off").writable


def test_bad_values_and_unknown_keys() -> None:
    with pytest.raises(StartupError, match="required"):
        parsed()
    with pytest.raises(StartupError, match="unknown parameter 'size'"):
        parsed(vdi="a", size="1G")
    with pytest.raises(StartupError, match="true or false"):
        parsed(vdi="a", shared="maybe")
    for n in ("0", "-1", "x", str(nbd_plugin.MAX_CONNECTIONS + 1)):
        with pytest.raises(StartupError, match="connections="):
            parsed(vdi="a", connections=n)
    with pytest.raises(StartupError, match="vdi="):
        parsed(vdi="x" * 256)
    assert parsed(vdi="a", connections="4").connections == 4
    assert not parsed(vdi="a", writeback="false").writeback


def test_help_as_a_script_under_debians_python() -> None:
    """nbdkit 1.32 never shows a Python script's help, so the file says it."""
    out = subprocess.run(["/usr/bin/python3", str(PLUGIN), "--help"], capture_output=True,
                         text=True, check=True, cwd="/").stdout
    for key in ("vdi=", "address=", "snapshot=", "shared=", "connections=", "writeback="):
        assert key in out


def test_config_help_lists_every_key() -> None:
    for key in ("vdi=", "address=", "snapshot=", "shared=", "connections=", "writeback="):
        assert key in nbd_plugin.config_help


def test_plugin_imports_only_stdlib_under_debians_python(tmp_path: Path) -> None:
    """The embedded interpreter has none of the venv's packages."""
    code = ("import runpy, sys; runpy.run_path(sys.argv[1]);"
            "import sheepblk; print(sheepblk.__file__)")
    out = subprocess.run(["/usr/bin/python3", "-I", "-c", code, str(PLUGIN)],
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert Path(out.strip()).resolve().parent == PLUGIN.parent
    assert sys.executable != "/usr/bin/python3"
