"""The systemd units of contrib/systemd pass `systemd-analyze verify`.

The units name /opt/sheepblk (the install location the README documents);
verify checks that every ExecStart binary exists, so the test copies the
units with /opt/sheepblk pointing at this checkout and its .venv: the
commands verify sees are the real ones, not stand-ins. Verify exits 0 on
warnings (an unknown key, a bad value it ignores), so any output fails too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
