"""Fixtures that start real processes: sheep daemons on free loopback ports.

Every process a test starts is stopped by its pid when the test ends; no
test touches a process it did not start.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import logcheck
import pytest
from cluster_harness import Member, stop_all

from sheepblk.client import SheepClient

BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0


def bin_path(name: str) -> str:
    """A console script of this virtualenv (sheep, dog, sheepfs)."""
    p = BIN / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(name)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], object], what: str, timeout: float = 90.0,
             interval: float = 0.1) -> None:
    """Poll `cond` until it is true. Exceptions count as "not yet" (a node
    may be between states); the last one is reported if time runs out.
    Only a bound on waiting, never a measurement."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                         + (f" (last error: {last!r})" if last else ""))


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = START_TIMEOUT,
              host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")


class SheepProcess:
    """One `sheep -f` daemon started by a test: on 127.0.0.1, or bound to
    `host` (`-b`) and run under `prefix` (a test's network namespace,
    tests/netns.py: `ip netns exec NS`)."""

    def __init__(self, store: Path, port: int, cluster: str, zone: int | None = None,
                 extra: list[str] | None = None, *, host: str = "127.0.0.1",
                 prefix: list[str] | None = None) -> None:
        self.store, self.port, self.cluster = store, port, cluster
        self.zone, self.extra = zone, list(extra or [])
        self.host, self.prefix = host, list(prefix or [])
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: bool = True) -> SheepProcess:
        args = [*self.prefix, bin_path("sheep"), "-f", "-p", str(self.port), "-c", self.cluster]
        if self.host != "127.0.0.1":
            args += ["-b", self.host]
        if self.zone is not None:
            args += ["-z", str(self.zone)]
        args += self.extra + [self.store_arg()]
        self.store.mkdir(parents=True, exist_ok=True)
        for path, kind in self.logs():
            logcheck.watch(path, kind)
        # The child keeps its own copy of the log's descriptor; ours closes.
        with open(self.store.parent / f"sheep-{self.port}.err", "ab") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        if wait:
            wait_port(self.port, self.proc, host=self.host)
        return self

    def store_arg(self) -> str:
        """The STORE argument of `sheep` (a multi-disk node lists its disks)."""
        return str(self.store)

    def logs(self) -> list[tuple[Path, logcheck.Kind]]:
        """Its sheep.log (in the store dir) and its stderr, which the
        test's teardown checks for errors (tests/logcheck.py)."""
        return [(self.store / "sheep.log", logcheck.LOG),
                (self.store.parent / f"sheep-{self.port}.err", logcheck.SHEEP_STDERR)]

    def collect_logs(self) -> None:
        """Read its logs now that it stopped: a store on a mount that goes
        before the test ends (a power cut) keeps them no longer."""
        for path, _ in self.logs():
            logcheck.collect(path)

    def client(self, **kw) -> SheepClient:  # type: ignore[no-untyped-def]
        return SheepClient(self.host, self.port, **kw)

    def wait_running(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until a formatted node serves I/O: a restarted cluster first
        answers "Waiting for other nodes to join cluster" while it settles
        its epoch through the ordered stream."""
        from sheepblk.proto import Res

        deadline = time.monotonic() + timeout
        with self.client(pool_size=1) as c:
            while True:
                result, _ = c.stat_cluster()
                if result == Res.SUCCESS:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {self.port} still answers {result:#x}")
                time.sleep(0.05)

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.collect_logs()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.collect_logs()
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
        self.collect_logs()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class MdSheepProcess(SheepProcess):
    """A multi-disk sheep: config and epochs in `store`, objects on `disks`
    (`sheep STORE,DISK,...`)."""

    def __init__(self, store: Path, port: int, cluster: str, disks: list[Path],
                 zone: int | None = None) -> None:
        super().__init__(store, port, cluster, zone=zone)
        self.disks = disks

    def store_arg(self) -> str:
        return ",".join(str(p) for p in [self.store, *self.disks])


class SheepFactory:
    """Starts nodes of one test's clusters; each cluster has its own shm file."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.nodes: list[SheepProcess] = []

    def start(self, n: int = 1, *, cluster: str | None = None, zones: bool = True,
              extra: list[str] | None = None) -> list[SheepProcess]:
        cluster = cluster or f"local:{self.tmp}/shm-{len(self.nodes)}"
        started = []
        for _ in range(n):
            i = len(self.nodes)
            node = SheepProcess(self.tmp / f"node{i}", free_port(), cluster,
                                zone=i if zones else None, extra=extra)
            self.nodes.append(node)
            started.append(node.start())
        return started

    def stop_all(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def sheep_factory(tmp_path: Path) -> Iterator[SheepFactory]:
    factory = SheepFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def one_node(sheep_factory: SheepFactory) -> Iterator[SheepProcess]:
    """A single formatted node, copies=1."""
    (node,) = sheep_factory.start(1)
    with node.client() as c:
        c.make_fs(copies=1)
    yield node


@pytest.fixture(params=["local", "zookeeper"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """A cluster test that takes this runs once per cluster driver: None
    (the factory's own `local` shm file), then a spec for a real ZooKeeper
    server started here (ZooKeeper orders and times events differently)."""
    if request.param == "local":
        yield None
        return
    from zk import ZooKeeperServer, missing

    why = missing()
    if why is not None:
        pytest.skip(f"no ZooKeeper: {why}")
    server = ZooKeeperServer(tmp_path / "zk")
    server.start()
    try:
        yield f"zookeeper:{server.hosts},timeout=4,cluster=t{os.getpid()}"
    finally:
        server.stop()


_groups = itertools.count(1)


@pytest.fixture(params=["local", "corosync"])
def daemon_driver(request: pytest.FixtureRequest) -> str | None:
    """The daemon tests of join, kill -9 and rejoin, halt, forced recovery
    and restart run once per driver: None (the factory's own `local` shm
    file), then a CPG group of its own on a real corosync."""
    if request.param == "local":
        return None
    request.getfixturevalue("corosync_server")
    return f"corosync:cluster=t{os.getpid()}-{next(_groups)}"


def run_dog(node: SheepProcess, *args: str, input: bytes | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run our `dog` against a node and return the finished process."""
    cmd = [bin_path("dog"), *args, "-a", "127.0.0.1", "-p", str(node.port)]
    return subprocess.run(cmd, input=input, capture_output=True, check=check, timeout=300)


@pytest.fixture
def spawn() -> Iterator[list[Member]]:
    """Cluster-driver test members (cluster_harness.start records them
    here); every one is stopped when the test ends."""
    started: list[Member] = []
    yield started
    stop_all(started)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "expected_errors(*regexes): errors this test causes on purpose; an error "
        "in a log (tests/logcheck.py) that none of the regexes finds (re.search) fails it")


@pytest.fixture(autouse=True)
def check_logs(request: pytest.FixtureRequest) -> Iterator[logcheck.LogWatch]:
    """Fail the test on an unexpected error in a log (tests/logcheck.py):
    this process's `sheep*` and root loggers, and the logs of the sheep,
    sheepfs, nbdkit and cluster members it started, read at teardown
    (this fixture comes first, so it ends after every other one)."""
    watch = logcheck.LogWatch()
    for mark in request.node.iter_markers("expected_errors"):
        watch.expect(*mark.args)
    tmp: Path | None = None
    if "tmp_path" in request.fixturenames:
        tmp = request.getfixturevalue("tmp_path")
    handler = watch.handler()
    root = logging.getLogger()
    root.addHandler(handler)
    logcheck.CURRENT = watch
    try:
        yield watch
        for path in list(watch.sources):
            watch.collect(path)
        for path in logcheck.sheep_logs_under(tmp) if tmp is not None else []:
            watch.watch(path, logcheck.LOG)
            watch.collect(path)
    finally:
        root.removeHandler(handler)
        logcheck.CURRENT = None
    report = watch.report()
    if report is not None:
        pytest.fail(report, pytrace=False)


@pytest.fixture
def expect_error_log(check_logs: logcheck.LogWatch) -> Callable[..., None]:
    """expect_error_log(r"regex", ...): from now on in this test, an error
    in a log that one of the regexes finds is expected."""
    return check_logs.expect


REPORT_LINES = pytest.StashKey[list[str]]()


@pytest.fixture
def report_line(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """report_line(text): a line for a section at the end of the run. Why:
    pytest hides what a passing test prints, and the VM tests' boot and
    recovery timings belong in CI's output."""
    lines = request.config.stash.setdefault(REPORT_LINES, [])
    return lambda text: lines.append(f"{request.node.name}: {text}")


def pytest_terminal_summary(terminalreporter, exitstatus: int,  # type: ignore[no-untyped-def]
                            config: pytest.Config) -> None:
    lines = config.stash.get(REPORT_LINES, [])
    if lines:
        terminalreporter.section("reported by tests")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under SHEEPBLK_NO_SKIP=1 (the README's test command sets it) a skipped
    test fails: a skip for a missing nbdkit, ZooKeeper or /dev/fuse then
    shows a missing install step instead of hiding it."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("SHEEPBLK_NO_SKIP") == "1" \
            and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped, but SHEEPBLK_NO_SKIP=1 forbids skips: {reason}"


@pytest.fixture(scope="module")
def zk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real ZooKeeper server for the module's tests (tests/zk.py); tests
    keep apart by cluster name."""
    from zk import ZooKeeperServer, missing

    why = missing()
    if why is not None:
        pytest.skip(f"no ZooKeeper: {why}")
    server = ZooKeeperServer(tmp_path_factory.mktemp("zk"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def corosync_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real corosync for the module's corosync tests (tests/corosync_server.py):
    one per host, so one per module; tests keep apart by CPG group."""
    from corosync_server import CorosyncServer, missing

    why = missing()
    if why is not None:
        pytest.skip(f"no corosync: {why}")
    server = CorosyncServer(tmp_path_factory.mktemp("corosync"))
    server.start()
    yield server
    server.stop()
