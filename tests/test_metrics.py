"""`sheep --metrics`: a Prometheus endpoint whose counters follow the
workload that real clients send (scraped with prometheus_client's own
parser while the workload runs and after it)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import SheepFactory, SheepProcess, bin_path, free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families

from sheepblk.proto import vid_to_data_oid

WRITES = 40
READS = 25
BLOCK = 4096


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as rsp:
        assert rsp.status == 200
        assert rsp.headers["Content-Type"].startswith("text/plain")
        text = rsp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: dict, name: str, **labels: str) -> float:
    return got.get((name, tuple(sorted(labels.items()))), 0.0)


def start_with_metrics(factory: SheepFactory, n: int) -> list[tuple[SheepProcess, int]]:
    cluster = f"local:{factory.tmp}/shm-metrics"
    out = []
    for _ in range(n):
        mport = free_port()
        (node,) = factory.start(1, cluster=cluster, extra=["--metrics", f"127.0.0.1:{mport}"])
        out.append((node, mport))
    return out


def test_counters_follow_the_workload(sheep_factory: SheepFactory) -> None:
    (gw, gw_m), (other, other_m) = start_with_metrics(sheep_factory, 2)
    with gw.client() as c:
        c.make_fs(copies=2)
        vid = c.create_vdi("m", 64 << 20)
    before = scrape(gw_m)
    before_peer = scrape(other_m)
    assert value(before, "sheepblk_epoch") == 1
    assert value(before, "sheepblk_cluster_members") == 2
    assert value(before, "sheepblk_cluster_status", status="ok") == 1
    assert value(before, "sheepblk_cluster_status", status="wait") == 0

    oids = [vid_to_data_oid(vid, i) for i in range(4)]
    scrapes: list[dict] = []
    stop = threading.Event()

    def scraper() -> None:  # scrapes while the workload runs
        while not stop.is_set():
            scrapes.append(scrape(gw_m))
            stop.wait(0.05)

    t = threading.Thread(target=scraper)
    t.start()
    try:
        with gw.client() as c:
            for oid in oids:
                c.create_and_write_obj(oid, bytes(BLOCK), copies=2)
            for i in range(WRITES):
                c.write_obj(oids[i % 4], bytes([i]) * BLOCK, offset=BLOCK * i)
            for i in range(READS):
                assert bytes(c.read_obj(oids[i % 4], BLOCK, offset=BLOCK * i)) == bytes([i]) * BLOCK
            c.flush(vid)
    finally:
        stop.set()
        t.join()
    after = scrape(gw_m)
    after_peer = scrape(other_m)

    def grew(got: dict, old: dict, name: str, **labels: str) -> float:
        return value(got, name, **labels) - value(old, name, **labels)

    assert scrapes, "no scrape finished during the workload"
    # Counters only go up, scrape after scrape.
    series = [value(s, "sheepblk_requests_total", op="write_obj", result="success")
              for s in [before, *scrapes, after]]
    assert series == sorted(series)

    ok = {"result": "success"}
    assert grew(after, before, "sheepblk_requests_total", op="write_obj", **ok) == WRITES
    assert grew(after, before, "sheepblk_requests_total", op="create_and_write_obj", **ok) == 4
    assert grew(after, before, "sheepblk_requests_total", op="read_obj", **ok) >= READS
    assert grew(after, before, "sheepblk_requests_total", op="flush_vdi", **ok) == 1
    # copies=2 on two nodes: every write also reached the other node as a peer write.
    assert grew(after_peer, before_peer, "sheepblk_requests_total", op="write_peer",
                **ok) == WRITES
    assert grew(after_peer, before_peer, "sheepblk_request_duration_seconds_count",
                role="peer", io="write") == WRITES + 4
    assert grew(after, before, "sheepblk_request_duration_seconds_count",
                role="gateway", io="write") == WRITES + 4
    assert grew(after, before, "sheepblk_request_duration_seconds_bucket",
                role="gateway", io="write", le="+Inf") == WRITES + 4
    assert grew(after, before, "sheepblk_request_duration_seconds_sum",
                role="gateway", io="write") > 0
    assert grew(after, before, "sheepblk_received_bytes_total", role="gateway") \
        == (WRITES + 4) * BLOCK
    assert grew(after, before, "sheepblk_sent_bytes_total", role="gateway") >= READS * BLOCK
    assert value(after, "sheepblk_requests_in_flight", role="gateway") == 0
    # The objects are on both nodes' disks.
    for got, node in ((after, gw), (after_peer, other)):
        disk = str(node.store / "obj")
        assert value(got, "sheepblk_disk_objects", disk=disk) >= 4
        assert value(got, "sheepblk_disk_used_bytes", disk=disk) >= 4 * BLOCK


def test_a_failed_request_is_counted_by_its_result(sheep_factory: SheepFactory) -> None:
    ((node, mport),) = start_with_metrics(sheep_factory, 1)
    with node.client() as c:
        c.make_fs(copies=1)
        vid = c.create_vdi("f", 16 << 20)
        try:
            c.read_obj(vid_to_data_oid(vid, 3), BLOCK)
        except Exception:  # noqa: BLE001 - the result code is what is checked
            pass
        else:
            raise AssertionError("reading an object never written succeeded")
    got = scrape(mport)
    assert value(got, "sheepblk_requests_total", op="read_obj", result="no_obj") == 1
    # Not a Prometheus path: 404, and the daemon keeps serving.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{mport}/nothing", timeout=10)
    except urllib.error.HTTPError as e:
        assert e.code == 404
    else:
        raise AssertionError("/nothing answered")
    # Not HTTP we serve: 405; a client that leaves mid-request: nothing.
    with socket.create_connection(("127.0.0.1", mport), timeout=10) as s:
        s.sendall(b"BREW /metrics HTTP/1.1\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 405 ")
    with socket.create_connection(("127.0.0.1", mport), timeout=10) as s:
        s.sendall(b"HEAD /metrics HTTP/1.1\r\n\r\n")
        head = b""
        while chunk := s.recv(65536):
            head += chunk
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
        assert int(re.search(rb"Content-Length: (\d+)", head)[1]) > 1000  # type: ignore[index]
    with socket.create_connection(("127.0.0.1", mport), timeout=10) as s:
        s.sendall(b"GET /metr")
    assert value(scrape(mport), "sheepblk_cluster_members") == 1


@pytest.mark.expected_errors(r"cannot serve metrics on")
def test_a_metrics_port_in_use_stops_the_sheep_with_its_address(tmp_path: Path) -> None:
    taken = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", taken))
        s.listen()
        r = subprocess.run([bin_path("sheep"), "-f", "-p", str(free_port()), "-c",
                            f"local:{tmp_path}/shm", "--metrics", f"127.0.0.1:{taken}",
                            str(tmp_path / "n")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{taken}" in r.stderr
    r = subprocess.run([bin_path("sheep"), "--metrics", "nonsense:port", str(tmp_path / "m")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "invalid --metrics" in r.stderr


# ---- the nbdkit plugin's metrics= (under nbdkit's own Python, Debian's) ----

PLUGIN_IO = r"""
n = int(argv[0])
for i in range(n):
    h.pwrite(bytes([i % 256]) * 4096, i * 4096)
for i in range(n):
    assert h.pread(4096, i * 4096) == bytes([i % 256]) * 4096
h.flush()
try:
    h.pread(4096, h.get_size())  # past the end: refused by nbdkit, never reaches us
except nbd.Error:
    pass
"""


def test_nbd_plugin_counts_what_its_clients_did(one_node: SheepProcess, tmp_path: Path) -> None:
    from test_nbd_plugin import export, libnbd, make_vdi

    make_vdi(one_node, "Alice", 16 << 20)
    mport = free_port()
    with export(tmp_path, one_node.port, "vdi=Alice", f"metrics=127.0.0.1:{mport}") as nk:
        before = scrape(mport)
        libnbd(nk.sock, PLUGIN_IO, WRITES)
        after = scrape(mport)
    for op, n in (("write", WRITES), ("read", WRITES), ("flush", 1)):
        assert value(after, "sheepblk_nbd_requests_total", op=op, result="ok") \
            - value(before, "sheepblk_nbd_requests_total", op=op, result="ok") == n
        assert value(after, "sheepblk_nbd_request_duration_seconds_count", op=op) == n
    assert value(after, "sheepblk_nbd_written_bytes_total") == WRITES * 4096
    assert value(after, "sheepblk_nbd_read_bytes_total") == WRITES * 4096
    assert value(after, "sheepblk_nbd_requests_in_flight") == 0


def test_nbd_plugin_metrics_errors_are_one_line(one_node: SheepProcess, tmp_path: Path) -> None:
    from test_nbd_plugin import PLUGIN, ROOT, make_vdi, one_line, start_fails

    make_vdi(one_node, "Alice", 16 << 20)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        line = one_line(start_fails(tmp_path, one_node.port, "vdi=Alice",
                                    f"metrics=127.0.0.1:{taken}"))
    assert f"cannot serve metrics on 127.0.0.1:{taken}" in line
    line = one_line(start_fails(tmp_path, one_node.port, "vdi=Alice", "metrics=x:y"))
    assert "metrics=" in line and "port" in line
    # A Python without prometheus_client (Debian's, without site-packages):
    # metrics= says what to install; without metrics= the plugin loads.
    probe = ("import sys; sys.argv = ['x']; import runpy; "
             f"m = runpy.run_path({PLUGIN!r}, run_name='plugin'); "
             "m['config']('vdi', 'Alice'); print('loaded'); sys.stdout.flush(); "
             "m['config']('metrics', '127.0.0.1:9')")
    r = subprocess.run(["/usr/bin/python3", "-S", "-c", probe], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.stdout == "loaded\n", r.stderr
    assert r.returncode == 1
    assert "python3-prometheus-client" in one_line(r.stderr)


# ---- sheepfs --metrics ----


def test_sheepfs_counts_what_went_through_the_mount(one_node: SheepProcess,
                                                     tmp_path: Path) -> None:
    from test_sheepfs import make_vdi, mounted

    make_vdi(one_node, "Alice", 16 << 20)
    mport = free_port()
    payload = bytes(range(256)) * 16 * WRITES  # WRITES x 4 KiB
    with mounted(one_node, tmp_path, "mnt", "--metrics", f"127.0.0.1:{mport}") as m:
        before = scrape(mport)
        fd = os.open(m / "volume" / "Alice", os.O_RDWR)
        try:
            os.pwrite(fd, payload, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        # Past the kernel's page cache: what the sheep holds, read back through sheepfs.
        with one_node.client() as c:
            vid = c.lookup_vdi("Alice").vid
            assert bytes(c.read_obj(vid_to_data_oid(vid, 0), len(payload))) == payload
        assert not (m / "volume" / "Nobody").exists()
        after = scrape(mport)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("sheepblk_fs_written_bytes_total") == len(payload)
    assert grew("sheepblk_fs_requests_total", op="write", result="ok") >= 1
    assert grew("sheepblk_fs_requests_total", op="fsync", result="ok") == 1
    assert grew("sheepblk_fs_requests_total", op="lookup", result="enoent") >= 1
    assert value(after, "sheepblk_fs_request_duration_seconds_count", op="write") \
        == value(after, "sheepblk_fs_requests_total", op="write", result="ok")


def test_sheepfs_metrics_port_in_use_is_a_clear_error(one_node: SheepProcess,
                                                      tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        for fg in (["-f"], []):  # in front, and as a daemon (its parent reports)
            r = subprocess.run([bin_path("sheepfs"), str(tmp_path / "mnt"), *fg, "-p",
                                str(one_node.port), "--metrics", f"127.0.0.1:{taken}"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 1
            assert f"cannot serve metrics on 127.0.0.1:{taken}" in r.stderr


def test_halts_recovery_and_locks_show(sheep_factory: SheepFactory) -> None:
    """copies=2 on two nodes: one dies, and I/O halts (one zone of two is no
    majority); a third joins, the halt ends and it recovers every object."""
    (a, a_m), (b, _) = start_with_metrics(sheep_factory, 2)
    with a.client() as c:
        c.make_fs(copies=2)
        vid = c.create_vdi("h", 16 << 20)
        for i in range(4):
            c.create_and_write_obj(vid_to_data_oid(vid, i), bytes([i]) * BLOCK, copies=2)
        c.lock_vdi("h")
        got = scrape(a_m)
        assert value(got, "sheepblk_vdi_locks", kind="exclusive") == 1
        assert value(got, "sheepblk_lock_leases") == 1
        c.release_vdi(vid)
    assert value(scrape(a_m), "sheepblk_vdi_locks", kind="exclusive") == 0
    assert value(scrape(a_m), "sheepblk_halted") == 0
    b.kill9()
    wait_for(lambda: value(scrape(a_m), "sheepblk_cluster_members") == 1, "b gone", 60)
    assert value(scrape(a_m), "sheepblk_halted") == 1
    with a.client() as c:
        try:
            c.read_obj(vid_to_data_oid(vid, 0), BLOCK)
        except Exception:  # noqa: BLE001 - the result is what is counted
            pass
    assert value(scrape(a_m), "sheepblk_requests_total", op="read_obj", result="halt") >= 1

    ((new, new_m),) = start_with_metrics(sheep_factory, 1)
    wait_for(lambda: value(scrape(new_m), "sheepblk_recovered_objects_total") >= 5
             and value(scrape(new_m), "sheepblk_recovery_running") == 0, "recovery", 60)
    got = scrape(new_m)
    # The four data objects and the VDI's inode, all of them here now.
    assert value(got, "sheepblk_recovered_objects_total") == 5
    assert value(got, "sheepblk_recovered_bytes_total") >= 4 * BLOCK
    assert value(got, "sheepblk_epoch") == value(scrape(a_m), "sheepblk_epoch") >= 3
    assert value(scrape(a_m), "sheepblk_halted") == 0
