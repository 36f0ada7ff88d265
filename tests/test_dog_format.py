"""dog's text formats, checked against output recorded from C Sheepdog 1.0.1
(/work/sheepdog-c/transcript.md), without a cluster."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from cli.dog.cluster import format_cluster_info, format_store_list, parse_copies
from cli.dog.errors import EXIT_USAGE, QuietError
from cli.dog.format import (
    NODE_LIST_HEADER,
    VDI_LIST_HEADER,
    node_list_row,
    parse_size,
    raw_escape,
    sort_nodes,
    strnumber,
    vdi_list_row,
)
from cli.dog.inodes import VdiInode
from cli.dog.options import parse_snapshot
from cli.dog.treeview import VdiTree
from cli.dog.vdi import graph_entry
from cli.dog.vdi_backup import compact
from cli.dog.vdi_io import pieces
from sheepblk.proto import (
    ClusterFlag,
    EpochLog,
    InodeHeader,
    NodeId,
    Res,
    SdNode,
    bitmap_ids,
    bitmap_test,
)

T0 = 1795642596  # 2026-11-25 21:36:36 UTC, the transcript's clock
CTIME = T0 << 32
GIB = 1 << 30


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# ---- sizes ----

@pytest.mark.parametrize("text,value", [
    ("0", 0), ("4096", 4096), ("4096B", 4096), ("512K", 512 << 10), ("512k", 512 << 10),
    ("256M", 256 << 20), ("1G", GIB), ("1g", GIB), ("1T", 1 << 40), ("2P", 2 << 50),
    ("1.5G", 3 << 29), ("0.5M", 1 << 19), ("4194300", 4194300),
])
def test_parse_size_accepts_sheepdog_forms(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "G", "1X", "1GB", "ten", "-1G", "1..5M", "nan", "inf",
                                  "99999999999P"])
def test_parse_size_refuses_garbage_with_usage_code(text: str) -> None:
    with pytest.raises(QuietError) as info:
        parse_size(text)
    assert info.value.exitcode == EXIT_USAGE
    assert "\n" not in info.value.message
    assert f"'{text}'" in info.value.message


@pytest.mark.parametrize("size,text", [
    (0, "0.0 MB"), (4 << 20, "4.0 MB"), (8 << 20, "8.0 MB"), (GIB, "1.0 GB"),
    (2 * GIB, "2.0 GB"), (85133574144, "79 GB"), (25272320, "24 MB"),
    (10 << 20, "10 MB"), ((10 << 20) - 1, "10.0 MB"), (1 << 40, "1.0 TB"), (1 << 50, "1.0 PB"),
])
def test_strnumber_matches_dog(size: int, text: str) -> None:
    assert strnumber(size) == text
    assert strnumber(size, raw=True) == str(size)


# ---- node list ----

def test_node_list_row_matches_transcript() -> None:
    n = SdNode(NodeId("127.0.0.1", 17000), 128, 16777343)
    assert NODE_LIST_HEADER == "  Id   Host:Port         V-Nodes       Zone"
    assert node_list_row(0, n, raw=False) == "   0   127.0.0.1:17000     \t128   16777343"
    assert node_list_row(0, n, raw=True) == "0 127.0.0.1:17000 128 16777343"


def test_nodes_sort_by_address_bytes_then_port() -> None:
    a = SdNode(NodeId("127.0.0.2", 7000))
    b = SdNode(NodeId("127.0.0.10", 7000))
    c = SdNode(NodeId("127.0.0.2", 6999))
    assert sort_nodes([b, a, c]) == [c, a, b]


# ---- vdi list ----

def header(name: str, vid: int, size: int = GIB, snap: bool = False, snap_id: int = 1,
           parent: int = 0, tag: str = "") -> InodeHeader:
    return InodeHeader(name=name, tag=tag, create_time=CTIME, snap_ctime=CTIME if snap else 0,
                       vdi_size=size, nr_copies=1, block_size_shift=22, snap_id=snap_id,
                       vdi_id=vid, parent_vdi_id=parent)


def test_vdi_list_rows_match_transcript() -> None:
    assert VDI_LIST_HEADER == ("  Name        Id    Size    Used  Shared    Creation time   "
                               "VDI id  Copies  Tag   Block Size Shift")
    snap = header("Alice", 0x15D167, snap=True, snap_id=1, tag="snap1")
    work = header("Alice", 0x15D168, snap_id=2, parent=0x15D167)
    clone = header("Charlie", 0x3CA881, snap_id=1, parent=0x15D167)
    bob = header("Bob4M", 0x729D57, size=4 << 20)
    mb8 = 8 << 20
    assert vdi_list_row(snap, mb8, 0, False) == (
        "s Alice        1  1.0 GB  8.0 MB  0.0 MB 2026-11-25 21:36   15d167      1         snap1  22")
    assert vdi_list_row(work, 0, mb8, False) == (
        "  Alice        0  1.0 GB  0.0 MB  8.0 MB 2026-11-25 21:36   15d168      1                22")
    assert vdi_list_row(clone, 0, mb8, False) == (
        "c Charlie      0  1.0 GB  0.0 MB  8.0 MB 2026-11-25 21:36   3ca881      1                22")
    assert vdi_list_row(bob, 0, 0, False) == (
        "  Bob4M        0  4.0 MB  0.0 MB  0.0 MB 2026-11-25 21:36   729d57      1                22")
    assert vdi_list_row(snap, mb8, 0, True) == "s Alice 1 1073741824 8388608 0 1795642596 15d167 1 snap1 22"
    assert vdi_list_row(work, 0, mb8, True) == "= Alice 0 1073741824 0 8388608 1795642596 15d168 1  22"
    assert vdi_list_row(clone, 0, mb8, True) == "c Charlie 0 1073741824 0 8388608 1795642596 3ca881 1  22"


def test_raw_names_escape_spaces_and_backslashes() -> None:
    assert raw_escape("a b\\c\td") == "a\\ b\\\\c\\\td"
    row = vdi_list_row(header("my disk", 7), 0, 0, True)
    assert row.split(" ")[:3] == ["=", "my\\", "disk"]


def test_used_and_shared_come_from_the_index() -> None:
    inode = VdiInode(header("Alice", 5), [5, 0, 3, 5, 3, 0])
    assert inode.stat() == (2, 2)


def test_bitmap_ids_in_ascending_order() -> None:
    bm = bytearray(1 << 21)
    for vid in (0x729D57, 0x15D167, 0x15D168, 1):
        bm[vid >> 3] |= 1 << (vid & 7)
    assert list(bitmap_ids(bytes(bm))) == [1, 0x15D167, 0x15D168, 0x729D57]
    assert bitmap_ids(bm) == bitmap_ids(memoryview(bm))
    assert bitmap_test(bm, 0x15D167) and not bitmap_test(bm, 0x15D166)


# ---- cluster info ----

NODE = SdNode(NodeId("127.0.0.1", 17000), 128, 16777343)


def epoch1() -> EpochLog:
    return EpochLog(CTIME, T0, 1, [NODE], nr_copies=1, flags=ClusterFlag.AUTO_VNODES,
                    drv_name="plain")


def test_cluster_info_running_matches_transcript() -> None:
    assert format_cluster_info(Res.SUCCESS, [epoch1()]) == (
        "Cluster status: running, auto-recovery enabled\n"
        "\n"
        "Cluster created at Wed Nov 25 21:36:36 2026\n"
        "\n"
        "Epoch Time           Version [Host:Port:V-Nodes,,,]\n"
        "2026-11-25 21:36:36      1 [127.0.0.1:17000:128]\n")
    assert format_cluster_info(Res.SUCCESS, [epoch1()], raw=True) == (
        "running, auto-recovery enabled\n\n1795642596 1 [127.0.0.1:17000:128]\n")
    assert format_cluster_info(Res.SUCCESS, [epoch1()], verbose=True) == (
        "Cluster status: running, auto-recovery enabled\n"
        "Cluster store: plain with 1 redundancy policy\n"
        "Cluster vnodes strategy: auto\n"
        "Cluster vnode mode: node\n"
        "Cluster created at Wed Nov 25 21:36:36 2026\n"
        "\n"
        "Epoch Time           Version [Host:Port:V-Nodes,,,]\n"
        "2026-11-25 21:36:36      1 [127.0.0.1:17000:128]\n")


def test_store_list_matches_sheepdog_101() -> None:
    """`dog cluster format -b dummy` against C sheep 1.0.1 (test 101's
    .out, whose filter strips the trailing space of the names)."""
    assert format_store_list("tree plain ") == (
        "Available stores:\n"
        "---------------------------------------\n"
        "tree plain \n")


def test_cluster_info_unformatted_matches_transcript() -> None:
    assert format_cluster_info(Res.WAIT_FOR_FORMAT, []) == (
        "Cluster status: Waiting for cluster to be formatted\n\n")
    assert format_cluster_info(Res.WAIT_FOR_FORMAT, [], raw=True) == (
        "Waiting for cluster to be formatted\n\n")


def test_cluster_info_lists_epochs_newest_first_with_diff() -> None:
    other = SdNode(NodeId("127.0.0.1", 17001), 64, 1)
    e2 = EpochLog(CTIME, T0 + 60, 2, [NODE, other], nr_copies=1)
    text = format_cluster_info(Res.SUCCESS, [e2, epoch1()])
    assert text.splitlines()[-2:] == [
        "2026-11-25 21:37:36      2 [127.0.0.1:17000:128, 127.0.0.1:17001:64]",
        "2026-11-25 21:36:36      1 [127.0.0.1:17000:128]"]
    diff = format_cluster_info(Res.SUCCESS, [e2, epoch1()], diff=True)
    assert diff.splitlines()[-2:] == ["2026-11-25 21:37:36      2 [+127.0.0.1:17001]",
                                      "2026-11-25 21:36:36      1 [formated]"]


# ---- tree and graph ----

def test_tree_matches_transcript() -> None:
    t = VdiTree()
    t.add("Alice", "[2026-11-25 21:36]", 0x15D167, 0)
    t.add("Alice", "[2026-11-25 21:36]", 0x15D168, 0x15D167)
    t.add("Alice", "(you are here)", 0x15D169, 0x15D168)
    t.add("Charlie", "(you are here)", 0x3CA881, 0x15D167)
    t.add("Bob4M", "(you are here)", 0x729D57, 0)
    assert t.render() == ("Alice---[2026-11-25 21:36]---[2026-11-25 21:36]---(you are here)\n"
                          "Charlie---(you are here)\n"
                          "Bob4M---(you are here)\n")


def test_tree_branches() -> None:
    t = VdiTree()
    t.add("A", "[s1]", 1, 0)
    t.add("A", "(you are here)", 2, 1)
    t.add("A", "[s2]", 3, 1)
    t.add("A", "(x)", 4, 3)
    assert t.render() == ("A---[s1]-+-(you are here)\n"
                          "         `-[s2]---(x)\n")


def test_graph_entry_matches_transcript() -> None:
    snap = VdiInode(header("Alice", 0x15D167, snap=True, snap_id=1, tag="snap1"), [])
    assert graph_entry(snap) == (
        '  "0" -> "15d167";\n'
        '  "15d167" [\n'
        '    group = "Alice",\n'
        '    label = "Name:      Alice\\nTag:           1\\nSize:     1.0 GB\\n'
        'Date: 2026-11-25\\nTime:   21:36:36"\n'
        "  ];\n\n")
    work = VdiInode(header("Bob4M", 0x729D57, size=4 << 20), [])
    assert graph_entry(work).endswith('Time:   21:36:36",\n    color="red"\n  ];\n\n')


# ---- small parsers ----

def test_parse_copies() -> None:
    assert parse_copies("3") == (3, 0)
    assert parse_copies("4:2") == (6, 0x22)
    for bad in ("0", "32", "3:1", "x", "4:0", "4:16"):
        with pytest.raises(QuietError):
            parse_copies(bad)
    with pytest.raises(QuietError) as err:  # dog's text, Sheepdog's tests 029 and 096
        parse_copies("something")
    assert err.value.message == (
        "Invalid parameter something\n"
        "To create replicated vdi, set -c x\n"
        "  x(1 to 31)   - number of replicated copies\n"
        "To create erasure coded vdi, set -c x:y\n"
        "  x(2,4,8,16)  - number of data strips\n"
        "  y(1 to 15)   - number of parity strips")


def test_cluster_info_shows_disabled_recovery() -> None:
    off = epoch1()._replace(disable_recovery=1)
    assert format_cluster_info(Res.SUCCESS, [off]).splitlines()[0] == (
        "Cluster status: running, auto-recovery disabled")


def test_parse_snapshot() -> None:
    assert parse_snapshot(None) == (0, "")
    assert parse_snapshot("2") == (2, "")
    assert parse_snapshot("snap1") == (0, "snap1")
    assert parse_snapshot("1a") == (0, "1a")
    with pytest.raises(QuietError):
        parse_snapshot("0")


def test_pieces_split_at_object_boundaries() -> None:
    osize = 4 << 20
    assert list(pieces(0, 2 * osize, osize)) == [(0, osize), (osize, osize)]
    assert list(pieces(osize - 4, 8, osize)) == [(osize - 4, 4), (osize, 4)]
    assert list(pieces(10, 0, osize)) == []


def test_backup_compaction_trims_equal_sectors() -> None:
    old = bytes(4096)
    new = bytearray(old)
    new[1024:1030] = b"abcdef"
    assert compact(bytes(new), old) == (1024, 512)
    assert compact(old, old)[1] == 0
