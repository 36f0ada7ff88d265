"""`dog node stat [-w]`, `dog node log level get|set|list` and `dog vdi cache`
against a real sheep, in C dog's output (dog/node.c, dog/common.c; dog/vdi.c
of Sheepdog 0.9 for the cache commands)."""

from __future__ import annotations

import os
import subprocess

from conftest import SheepProcess, bin_path, run_dog

from sheepblk.proto import vid_to_data_oid

MIB = 1 << 20
C_HEADER = "Request\tActive\tTotal\tWrite\tRead\tRemove\tFlush\tAll WR\tAll RD"


def stat_raw(node: SheepProcess) -> tuple[list[int], list[int]]:
    out = run_dog(node, "node", "stat", "-r").stdout.decode().splitlines()
    assert len(out) == 2, out
    client, peer = ([int(x) for x in line.split("\t")] for line in out)
    return client, peer


def test_node_stat_counts_the_requests_sent(one_node: SheepProcess) -> None:
    run_dog(one_node, "vdi", "create", "S", "8M")
    client0, _ = stat_raw(one_node)
    data = os.urandom(8 * MIB)
    writes = 16
    with one_node.client() as c:
        vid = c.lookup_vdi("S").vid
        oid = vid_to_data_oid(vid, 0)
        c.create_and_write_obj(oid, data[:4096])
        for i in range(1, writes):
            c.write_obj(oid, data[i * 4096:(i + 1) * 4096], offset=i * 4096)
        for i in range(writes):
            assert bytes(c.read_obj(oid, 4096, offset=i * 4096)) == data[i * 4096:(i + 1) * 4096]
        c.flush(vid)
    client, peer = stat_raw(one_node)
    delta = [a - b for a, b in zip(client, client0, strict=True)]
    # Active, Total, then C dog's one-shot order: the read count under
    # "Write" and the write count under "Read" (dog/node.c prints them so).
    active, total, reads, writes_seen, removes, flushes, rx, tx = delta
    assert (reads, writes_seen, flushes, removes) == (writes, writes, 1, 0)
    assert total == reads + writes_seen + flushes
    assert active == 0
    assert rx == writes * 4096 and tx == writes * 4096
    assert peer == [0] * 8  # one node, copies=1: no other sheep asked it anything

    text = run_dog(one_node, "node", "stat").stdout.decode().splitlines()
    assert text[0] == C_HEADER
    assert text[1].startswith("Client\t") and text[2].startswith("Peer\t")
    assert text[2].endswith("\t0.0 MB\t0.0 MB")


def test_node_stat_watch_prints_a_sample_a_second(one_node: SheepProcess) -> None:
    proc = subprocess.Popen([bin_path("dog"), "node", "stat", "-w", "-p", str(one_node.port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().rstrip("\n") for _ in range(6)]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    watch_header = C_HEADER + "\tWRBW\tRDBW\tRPS"
    assert lines[0] == lines[3] == watch_header
    assert [ln.split("\t")[0] for ln in lines] == ["Request", "Client", "Peer"] * 2
    # The first sample compares the counters with themselves.
    assert lines[1].split("\t")[-3:] == ["0.0 MB", "0.0 MB", "0"]


def test_log_level_get_set_list(one_node: SheepProcess) -> None:
    def get() -> str:
        return run_dog(one_node, "node", "log", "level", "get").stdout.decode()

    assert get() == "info (6)\n"
    run_dog(one_node, "node", "log", "level", "set", "debug")
    assert get() == "debug (7)\n"
    bad = run_dog(one_node, "node", "log", "level", "set", "loud", check=False)
    assert bad.returncode == 255  # C dog's -1
    lines = bad.stderr.decode().splitlines()
    assert lines[:2] == ["invalid loglevel: loud", "available loglevels:"]
    assert lines[2:] == [f"{n}\t({i})" for i, n in enumerate(
        ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"])]
    assert get() == "debug (7)\n"
    run_dog(one_node, "node", "log", "level", "set", "info")
    assert get() == "info (6)\n"
    listed = subprocess.run([bin_path("dog"), "node", "log", "level", "list"],
                            capture_output=True, text=True, check=True).stdout
    assert listed.splitlines() == lines[2:]


def test_vdi_cache_flush_works_and_the_rest_is_not_supported(one_node: SheepProcess) -> None:
    run_dog(one_node, "vdi", "create", "C", "8M")
    assert run_dog(one_node, "vdi", "cache", "flush", "C").returncode == 0
    missing = run_dog(one_node, "vdi", "cache", "flush", "Nobody", check=False)
    assert missing.returncode == 1
    assert missing.stderr.decode().startswith(
        "Failed to open VDI Nobody (snapshot id: 0 snapshot tag: ): No VDI found")
    for args, what in ((("info",), "failed to get cache information"),
                       (("delete", "C"), "failed to execute request"),
                       (("purge",), "failed to execute request"),
                       (("purge", "C"), "failed to execute request")):
        r = run_dog(one_node, "vdi", "cache", *args, check=False)
        assert r.returncode == 1, args
        assert r.stderr.decode().splitlines() == [
            f"{what}: Operation is not supported",
            "no object cache runs on this sheep (sheepblk keeps none)"], args
    # The sheep serves on.
    assert run_dog(one_node, "node", "stat").returncode == 0
