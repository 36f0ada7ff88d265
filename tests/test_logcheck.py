"""The log check itself (tests/logcheck.py): what it counts as an error,
in which log, and what a test's expected regexes let through."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import logcheck
import pytest
from logcheck import LOG, MEMBER_STDERR, NBDKIT_STDERR, SHEEP_STDERR, STDERR, LogWatch, scan

TB = """Traceback (most recent call last):
  File "x.py", line 1, in <module>
    boom()
OSError: [Errno 5] Input/output error"""

SHEEP_LOG = f"""2024-01-02 03:04:05,006 INFO [sheep] started
2024-01-02 03:04:05,007 WARNING [sheep.conn] connection from 127.0.0.1 closed
2024-01-02 03:04:05,008 ERROR [sheep.md] disk /d1 dropped (EIO)
2024-01-02 03:04:05,009 ERROR [sheep] request 0x2 failed
{TB}
2024-01-02 03:04:05,010 WARNING [sheep] odd, but with a traceback
{TB}
2024-01-02 03:04:05,011 CRITICAL [sheep] the end
"""


def texts(found: list[logcheck.Finding]) -> list[str]:
    return [f.text.splitlines()[0] for f in found]


def test_log_file_errors_and_tracebacks() -> None:
    found = scan(SHEEP_LOG, LOG, "sheep.log")
    assert texts(found) == [
        "2024-01-02 03:04:05,008 ERROR [sheep.md] disk /d1 dropped (EIO)",
        "2024-01-02 03:04:05,009 ERROR [sheep] request 0x2 failed",
        "2024-01-02 03:04:05,010 WARNING [sheep] odd, but with a traceback",
        "2024-01-02 03:04:05,011 CRITICAL [sheep] the end",
    ]
    assert found[1].text.endswith("OSError: [Errno 5] Input/output error")
    # The context marks the record and shows the lines before it.
    assert "  2024-01-02 03:04:05,007 WARNING" in found[0].context
    assert "> 2024-01-02 03:04:05,008 ERROR" in found[0].context


def test_sheepfs_log_format() -> None:
    text = ("2024-01-02 03:04:05,006 sheepfs[12] INFO sheepblk.fs.mount: mounted\n"
            "2024-01-02 03:04:05,007 sheepfs[12] ERROR sheepblk.fs.volumes: flushing a failed\n")
    assert texts(scan(text, LOG, "x")) == [text.splitlines()[1]]


def test_sheep_stderr_copies_are_skipped_but_crashes_count() -> None:
    err = f"""sheep: WARNING: something
sheep: ERROR: request 0x2 failed
{TB}
sheep: cannot use /x: Permission denied
Exception in thread worker:
{TB}

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "y.py", line 2, in <module>
RuntimeError: second
after
"""
    found = scan(err, SHEEP_STDERR, "sheep.err")
    assert len(found) == 1
    assert found[0].text.startswith("Traceback")
    assert found[0].text.endswith("RuntimeError: second")
    assert "> RuntimeError: second\n  after" in found[0].context


def test_exception_group_traceback() -> None:
    err = """  + Exception Group Traceback (most recent call last):
  |   File "x.py", line 1, in <module>
  | ExceptionGroup: eg (1 sub-exception)
  +-+---------------- 1 ----------------
    | Traceback (most recent call last):
    | ValueError: x
    +------------------------------------
next"""
    (f,) = scan(err, STDERR, "x")
    assert f.text.endswith("+------------------------------------")


def test_tool_error_lines() -> None:
    nbd = "nbdkit: debug: fine\nnbdkit: python.3: error: pread: cannot read\n"
    assert texts(scan(nbd, NBDKIT_STDERR, "x")) == ["nbdkit: python.3: error: pread: cannot read"]
    member = "WARNING:kazoo.client:lost\nERROR:sheepblk.cluster.zookeeper:gone\n"
    assert texts(scan(member, MEMBER_STDERR, "x")) == ["ERROR:sheepblk.cluster.zookeeper:gone"]


def test_expected_regexes_let_errors_through(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    log.write_text(SHEEP_LOG)
    watch = LogWatch()
    watch.watch(log, LOG)
    watch.collect(log)
    assert len(watch.unexpected()) == 4
    watch.expect(r"disk \S+ dropped", r"OSError: \[Errno 5\]")
    assert texts(watch.unexpected()) == ["2024-01-02 03:04:05,011 CRITICAL [sheep] the end"]
    report = watch.report()
    assert report is not None and "1 unexpected error(s)" in report and str(log) in report
    watch.expect("the end")
    assert watch.report() is None


def test_a_log_is_read_once_even_when_cut(tmp_path: Path) -> None:
    """Read again, a log yields only what it gained; cut by a power cut and
    written on, only what is new after the cut."""
    log = tmp_path / "node.log"
    first = "2024-01-02 03:04:05,001 ERROR [sheep] one\n2024-01-02 03:04:05,002 INFO [sheep] x\n"
    log.write_text(first)
    watch = LogWatch()
    watch.collect(log)
    watch.collect(log)
    assert len(watch.found) == 1
    log.write_text(first + "2024-01-02 03:04:05,003 ERROR [sheep] two\n")
    watch.collect(log)
    assert len(watch.found) == 2
    log.write_text(first[:30] + "\n2024-01-02 03:04:06,001 ERROR [sheep] three\n")
    watch.collect(log)
    assert texts(watch.found)[2:] == ["2024-01-02 03:04:06,001 ERROR [sheep] three"]


def test_in_process_records() -> None:
    watch = LogWatch()
    handler = watch.handler()
    for name in ("sheep.conn", "sheepblk.fs.volumes", "root", "kazoo.client"):
        handler.handle(logging.LogRecord(name, logging.ERROR, __file__, 1, "bad %s", ("x",), None))
    try:
        raise ValueError("v")
    except ValueError:
        exc = sys.exc_info()
    handler.handle(logging.LogRecord("sheep", logging.WARNING, __file__, 1, "warned", (), exc))
    handler.handle(logging.LogRecord("sheep", logging.WARNING, __file__, 1, "only warned", (), None))
    got = [f.text.splitlines()[0] for f in watch.found]
    assert got == ["ERROR [sheep.conn] bad x", "ERROR [sheepblk.fs.volumes] bad x",
                   "ERROR [root] bad x", "WARNING [sheep] warned"]
    assert watch.found[-1].text.endswith("ValueError: v")


@pytest.mark.expected_errors(r"\[sheep\.test\] on purpose")
def test_the_marker_allows_an_error_here() -> None:
    logging.getLogger("sheep.test").error("on purpose")


def test_the_fixture_allows_an_error_here(expect_error_log) -> None:  # type: ignore[no-untyped-def]
    expect_error_log(r"\[sheepblk\.test\] also on purpose: \d+")
    logging.getLogger("sheepblk.test").error("also on purpose: %d", 42)


def test_an_unexpected_error_fails_the_test(tmp_path: Path) -> None:
    """Run in a pytest of its own: an unexpected error fails at teardown,
    with the record shown; a marked one passes."""
    (tmp_path / "conftest.py").write_text(f"""
import importlib.util
import sys

sys.path.insert(0, {str(Path(__file__).parent)!r})
spec = importlib.util.spec_from_file_location("sheep_conftest", {str(Path(__file__).with_name("conftest.py"))!r})
ours = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ours)
check_logs, expect_error_log, pytest_configure = ours.check_logs, ours.expect_error_log, ours.pytest_configure
""")
    (tmp_path / "test_inner.py").write_text("""
import logging
import pytest

def test_bad():
    logging.getLogger("sheep").error("nobody expected %s", "this")

@pytest.mark.expected_errors("expected this")
def test_good():
    logging.getLogger("sheep").error("expected this")
""")
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                        "--basetemp", str(tmp_path / "tmp"), "test_inner.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 passed, 1 error" in r.stdout  # test_bad passes, then errs at teardown
    assert "ERROR at teardown of test_bad" in r.stdout
    assert "ERROR [sheep] nobody expected this" in r.stdout
