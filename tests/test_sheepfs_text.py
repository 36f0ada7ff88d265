"""sheepfs's pure parts: file-name rules and the dog-compatible status texts."""

from __future__ import annotations

import time

import pytest

from sheepblk.fs.names import BadName, VolumeRef, candidates, file_name, parse_control
from sheepblk.fs.status import (
    cluster_info_text,
    node_info_text,
    node_list_text,
    strnumber,
    vdi_list_text,
)
from sheepblk.proto import EpochLog, InodeHeader, NodeId, NodeResult, Res, SdNode

MIB = 1 << 20


def hdr(**kw: object) -> InodeHeader:
    base = dict(name="Alice", vdi_size=64 * MIB, nr_copies=3, vdi_id=0xFD32FC,
                create_time=int(time.mktime((2024, 5, 6, 7, 8, 0, 0, 0, -1))) << 32,
                snap_id=1)
    base.update(kw)
    return InodeHeader(**base)  # type: ignore[arg-type]


def test_file_names() -> None:
    assert file_name(hdr()) == "Alice"
    assert file_name(hdr(snap_ctime=1, tag="before", snap_id=2)) == "Alice@before"
    assert file_name(hdr(snap_ctime=1, snap_id=2)) == "Alice@2"
    for bad in ("a/b", "..", ".", "a\0b", ""):
        assert file_name(hdr(name=bad)) is None


def test_candidates_try_whole_name_then_tag_then_id() -> None:
    assert candidates("Alice") == [VolumeRef("Alice")]
    assert candidates("a@b@7") == [VolumeRef("a@b@7"), VolumeRef("a@b", tag="7"),
                                   VolumeRef("a@b", snapid=7)]
    assert candidates("x@") == [VolumeRef("x@")]
    for bad in ("..", "a/b", "a\0", "x" * 256):
        with pytest.raises(BadName):
            candidates(bad)


def test_control_input() -> None:
    assert parse_control(b"Alice\n") == ["Alice"]
    assert parse_control(b"Alice\nBob\n") == ["Alice", "Bob"]
    for bad in (b"", b"\n", b"a/b\n", b"..\n", b"a\0b", b"\xff\n", b"x" * 300):
        with pytest.raises(BadName):
            parse_control(bad)


def test_strnumber_as_dog() -> None:
    assert strnumber(0) == "0.0 MB"
    assert strnumber(4 * MIB) == "4.0 MB"
    assert strnumber(64 * MIB) == "64 MB"
    assert strnumber(1 << 30) == "1.0 GB"
    assert strnumber(79 << 30) == "79 GB"


def test_vdi_list_rows() -> None:
    alice = hdr()
    snap = hdr(snap_ctime=5, tag="snap1", snap_id=1, vdi_id=0xFD32FB)
    idx_alice = [0xFD32FC, 0xFD32FB] + [0] * 14
    text = vdi_list_text([(snap, [0xFD32FB] * 2 + [0] * 14), (alice, idx_alice)])
    lines = text.splitlines()
    assert lines[0] == ("  Name        Id    Size    Used  Shared    Creation time   VDI id"
                        "  Copies  Tag   Block Size Shift")
    assert lines[1] == ("s Alice        1   64 MB  8.0 MB  0.0 MB 2024-05-06 07:08   fd32fb"
                        "      3         snap1  22")
    assert lines[2] == ("  Alice        0   64 MB  4.0 MB  4.0 MB 2024-05-06 07:08   fd32fc"
                        "      3                22")


def test_node_list_sorted_like_dog() -> None:
    nodes = [SdNode(NodeId("127.0.0.1", 7001), 128, 1), SdNode(NodeId("127.0.0.1", 7000), 64, 0)]
    assert node_list_text(nodes) == (
        "  Id   Host:Port         V-Nodes       Zone\n"
        "   0   127.0.0.1:7000      \t64          0\n"
        "   1   127.0.0.1:7001      \t128          1\n")


def test_node_info_skips_silent_nodes() -> None:
    g = 1 << 30
    text = node_info_text([NodeResult(1, 100 * g, 75 * g), None], 64 * MIB)
    assert text == ("Id\tSize\tUsed\tAvail\tUse%\n"
                    " 0\t100 GB\t25 GB\t75 GB\t 25%\n"
                    "Total\t100 GB\t25 GB\t75 GB\t 25%\n"
                    "\n"
                    "Total virtual image size\t64 MB\n")


def test_cluster_info() -> None:
    t = int(time.mktime((2024, 5, 6, 7, 8, 9, 0, 0, -1)))
    nodes = [SdNode(NodeId("127.0.0.1", 7000), 128)]
    logs = [EpochLog(ctime=t << 32, time=t, epoch=2, nodes=nodes * 2),
            EpochLog(ctime=t << 32, time=t, epoch=1, nodes=nodes)]
    text = cluster_info_text(Res.SUCCESS, logs)
    assert text == (
        "Cluster status: running, auto-recovery enabled\n\n"
        f"Cluster created at {time.ctime(t)}\n\n"
        "Epoch Time           Version [Host:Port:V-Nodes,,,]\n"
        "2024-05-06 07:08:09      2 [127.0.0.1:7000:128, 127.0.0.1:7000:128]\n"
        "2024-05-06 07:08:09      1 [127.0.0.1:7000:128]\n")
    assert cluster_info_text(Res.WAIT_FOR_FORMAT, []) == (
        "Cluster status: Waiting for cluster to be formatted\n\n")
