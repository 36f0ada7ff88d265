"""`dog` against real sheep processes: the commands a Sheepdog user types,
their output formats (raw ones parsed as scripts do), exit codes and
error lines."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import SheepProcess, bin_path, free_port, run_dog

MIB = 1 << 20
OBJ = 4 * MIB


def dog(node: SheepProcess, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return run_dog(node, *args, input=input, check=False)


def ok(node: SheepProcess, *args: str, input: bytes | None = None) -> bytes:
    p = dog(node, *args, input=input)
    assert p.returncode == 0, (args, p.returncode, p.stderr.decode())
    assert p.stderr == b"", p.stderr.decode()
    return p.stdout


def fails(node: SheepProcess, *args: str, code: int, input: bytes | None = None) -> str:
    """Run a command that must fail with `code` and one clear line on stderr."""
    p = dog(node, *args, input=input)
    err = p.stderr.decode()
    assert p.returncode == code, (args, p.returncode, err)
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err.strip()


def vdi_rows(node: SheepProcess) -> list[list[str]]:
    return [line.split(" ") for line in ok(node, "vdi", "list", "-r").decode().splitlines()]


def used_of(node: SheepProcess, name: str) -> int:
    (row,) = [r for r in vdi_rows(node) if r[1] == name and r[0] != "s"]
    return int(row[4])


@pytest.fixture
def data() -> bytes:
    # Three whole objects and a ragged tail: exercises the object pipeline.
    return os.urandom(3 * OBJ + 12345)


def test_issue_sequence(sheep_factory, tmp_path, data: bytes) -> None:  # type: ignore[no-untyped-def]
    (node,) = sheep_factory.start(1)
    assert "Waiting for cluster to be formatted" in ok(node, "cluster", "info").decode()
    assert ok(node, "cluster", "format", "--copies=1") == b"using backend plain store\n"
    ok(node, "vdi", "create", "Alice", "1G")
    disk = tmp_path / "disk.raw"
    disk.write_bytes(data)
    with open(disk, "rb") as f:
        p = subprocess.run([bin_path("dog"), "vdi", "write", "Alice", "-p", str(node.port)],
                           stdin=f, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr
    copy = ok(node, "vdi", "read", "Alice")
    assert len(copy) == 1 << 30
    assert copy[:len(data)] == data
    assert copy[len(data):].count(0) == len(copy) - len(data)

    listing = ok(node, "vdi", "list").decode().splitlines()
    assert listing[0].startswith("  Name        Id    Size    Used  Shared")
    assert listing[1].startswith("  Alice        0  1.0 GB   16 MB  0.0 MB ")
    assert used_of(node, "Alice") == 4 * OBJ

    nodes = ok(node, "node", "list").decode().splitlines()
    assert nodes[0] == "  Id   Host:Port         V-Nodes       Zone"
    assert f"127.0.0.1:{node.port}" in nodes[1]

    info = ok(node, "cluster", "info").decode().splitlines()
    assert info[0] == "Cluster status: running, auto-recovery enabled"
    assert info[2].startswith("Cluster created at ")
    assert info[4] == "Epoch Time           Version [Host:Port:V-Nodes,,,]"
    assert info[5].endswith(f"      1 [127.0.0.1:{node.port}:{nodes[1].split()[2]}]")

    ok(node, "vdi", "delete", "Alice")
    assert vdi_rows(node) == []
    ok(node, "cluster", "shutdown")
    assert node.proc is not None
    node.proc.wait(timeout=30)


def test_offsets_and_lengths(one_node: SheepProcess) -> None:
    ok(one_node, "vdi", "create", "Bob", "16M")
    ok(one_node, "vdi", "write", "Bob", "0", "14", input=b"hello sheepdog")
    assert ok(one_node, "vdi", "read", "Bob", "0", "14") == b"hello sheepdog"
    assert ok(one_node, "vdi", "read", "Bob", "6", "5") == b"sheep"
    # Across an object boundary, with size suffixes for offset and length.
    blob = os.urandom(MIB)
    ok(one_node, "vdi", "write", "Bob", str(OBJ - 100), "1M", input=blob)
    assert ok(one_node, "vdi", "read", "Bob", str(OBJ - 100), "1M") == blob
    # LEN limits what is taken from stdin.
    ok(one_node, "vdi", "write", "Bob", "8M", "3", input=b"abcdef")
    assert ok(one_node, "vdi", "read", "Bob", "8M", "6") == b"abc\0\0\0"
    # Reads stop at the end of the VDI; at the end they are empty.
    assert ok(one_node, "vdi", "read", "Bob", str(16 * MIB - 4), "8") == b"\0" * 4
    assert ok(one_node, "vdi", "read", "Bob", "16M", "1") == b""
    assert fails(one_node, "vdi", "read", "Bob", "17M", code=1) == \
        "Read offset is beyond the end of the VDI"
    assert fails(one_node, "vdi", "write", "Bob", "17M", input=b"x", code=1) == \
        "Write offset is beyond the end of the VDI"


def test_zero_objects_are_discarded_not_stored(one_node: SheepProcess) -> None:
    ok(one_node, "vdi", "create", "Z", "12M")
    ok(one_node, "vdi", "write", "Z", input=os.urandom(12 * MIB))
    assert used_of(one_node, "Z") == 12 * MIB
    ok(one_node, "vdi", "write", "Z", "4M", "4M", input=bytes(OBJ))
    assert used_of(one_node, "Z") == 8 * MIB
    assert ok(one_node, "vdi", "read", "Z", "4M", "4M") == bytes(OBJ)
    # A partial object of zeros is written, not discarded.
    ok(one_node, "vdi", "write", "Z", "0", "1M", input=bytes(MIB))
    assert used_of(one_node, "Z") == 8 * MIB
    assert ok(one_node, "vdi", "read", "Z", "0", "1M") == bytes(MIB)


def test_raw_output_parses(one_node: SheepProcess) -> None:
    ok(one_node, "vdi", "create", "-c", "1", "my disk", "5M")
    (row,) = vdi_rows(one_node)
    assert row[0] == "="
    assert row[1:3] == ["my\\", "disk"]  # the name's space is escaped
    kind, _n1, _n2, snapid, size, used, shared, ctime, vid, copies, tag, shift = row
    assert (snapid, size, used, shared, copies, tag, shift) == ("0", str(5 * MIB), "0", "0",
                                                                 "1", "", "22")
    assert int(ctime) > 1_600_000_000 and int(vid, 16) > 0
    (nrow,) = [r.split(" ") for r in ok(one_node, "node", "list", "-r").decode().splitlines()]
    assert nrow[0] == "0" and nrow[1] == f"127.0.0.1:{one_node.port}" and int(nrow[2]) > 0
    lines = ok(one_node, "cluster", "info", "-r").decode().splitlines()
    assert lines[0] == "running, auto-recovery enabled" and lines[1] == ""
    when, epoch, members = lines[2].split(" ", 2)
    assert int(when) > 1_600_000_000 and epoch == "1"
    assert members.startswith(f"[127.0.0.1:{one_node.port}:")
    info = ok(one_node, "node", "info", "-r").decode().splitlines()
    assert info[-1].split(" ")[0] == "Total" and info[-1].split(" ")[-1] == str(5 * MIB)


def test_errors_are_one_line_with_sheepdog_codes(one_node: SheepProcess) -> None:
    ok(one_node, "vdi", "create", "Alice", "8M")
    assert fails(one_node, "vdi", "create", "Alice", "8M", code=1) == \
        "Failed to create VDI Alice: VDI exists already"
    assert fails(one_node, "vdi", "read", "NoSuch", "0", "1", code=1) == \
        "Failed to open VDI NoSuch (snapshot id: 0 snapshot tag: ): No VDI found"
    assert fails(one_node, "vdi", "delete", "NoSuch", code=5).endswith("No VDI found")
    assert "Invalid size '12Q'" in fails(one_node, "vdi", "create", "Bad", "12Q", code=64)
    assert "Invalid size 'x'" in fails(one_node, "vdi", "read", "Alice", "x", code=64)
    assert "too long" in fails(one_node, "vdi", "create", "n" * 256, "8M", code=64)
    ok(one_node, "vdi", "create", "n" * 255, "8M")
    assert "Shrinking VDIs is not implemented" in fails(one_node, "vdi", "resize", "Alice", "4M",
                                                        code=64)
    assert fails(one_node, "vdi", "getattr", "Alice", "nokey", code=5) == \
        "Attribute 'nokey' not found"
    assert fails(one_node, "vdi", "clone", "Alice", "Dave", code=64).startswith(
        "Only snapshot VDIs can be cloned")
    assert fails(one_node, "node", "kill", "7", code=64) == "Invalid node id '7'"
    # Nothing of the failed commands was created.
    names = [r[1] for r in vdi_rows(one_node)]
    assert sorted(names) == ["Alice", "n" * 255]


def test_resize_grows(one_node: SheepProcess) -> None:
    ok(one_node, "vdi", "create", "R", "4M")
    ok(one_node, "vdi", "write", "R", input=b"x" * 100)
    ok(one_node, "vdi", "resize", "R", "1G")
    (row,) = vdi_rows(one_node)
    assert row[3] == str(1 << 30)
    assert ok(one_node, "vdi", "read", "R", "0", "100") == b"x" * 100
    assert ok(one_node, "vdi", "read", "R", "1023M", "4") == b"\0" * 4


def test_unreachable_sheep_is_a_system_failure() -> None:
    port = free_port()
    p = subprocess.run([bin_path("dog"), "node", "list", "-p", str(port)], capture_output=True,
                       timeout=60)
    assert p.returncode == 2
    assert p.stderr.decode().strip() == \
        f"failed to connect to 127.0.0.1:{port}: Connection refused"


def test_collie_alias(one_node: SheepProcess) -> None:
    p = subprocess.run([bin_path("collie"), "node", "list", "-r", "-p", str(one_node.port)],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().split(" ")[1] == f"127.0.0.1:{one_node.port}"


def test_bad_options_are_usage_errors(one_node: SheepProcess) -> None:
    assert dog(one_node, "vdi", "list", "--no-such-option").returncode == 64
    assert dog(one_node, "vdi", "frobnicate").returncode == 64
    p = subprocess.run([bin_path("dog"), "vdi", "list", "-p", "99999"], capture_output=True,
                       timeout=60)
    assert p.returncode == 64 and p.stderr.decode().strip() == "Invalid port number '99999'"


def test_usage_error_is_one_line(one_node: SheepProcess) -> None:
    line = fails(one_node, "vdi", "write", "-s", "snap1", "Alice", input=b"x", code=64)
    assert "No such option" in line and "-s" in line


def test_restore_to_a_missing_snapshot_says_why(one_node: SheepProcess) -> None:
    """As dog: the failed look-up's own line, then what it means here."""
    run_dog(one_node, "vdi", "create", "test", "4M")
    run_dog(one_node, "vdi", "snapshot", "-s", "s1", "test")
    out = run_dog(one_node, "vdi", "restore", "test", "-s", "nope", input=b"", check=False)
    assert out.returncode == 1
    assert out.stderr.decode().splitlines() == [
        "Failed to open VDI test (snapshot id: 0 snapshot tag: nope): "
        "Failed to find requested tag",
        "Snapshot ID 0 or tag nope doesn't exist"]
