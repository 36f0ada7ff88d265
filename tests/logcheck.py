"""Tests fail on unexpected errors in logs, as S3QL's suite does.

What counts as an error:

- in this process: a record of ERROR or worse, or a record that carries an
  exception (exc_info) at WARNING or worse, from the `sheep*` loggers
  (sheep, sheep.conn, sheepblk..., sheepfs) or the root logger;
- in a log file of a process the test started (a sheep's `sheep.log`, a
  sheepfs `--log`): a record of ERROR or CRITICAL, or any record with a
  Python traceback in it;
- on the stderr of such a process: a traceback that is not the copy of a
  logged record (an exception nobody caught), or an error line in the
  tool's own format (nbdkit's `error:`, a cluster member's `ERROR:`).

A test that means to cause one says so with the marker
`@pytest.mark.expected_errors(r"regex", ...)`, or calls the
`expect_error_log("regex")` fixture while it runs; an error whose text
(the record's line and any traceback under it) has a match for one of the
regexes (re.search) is allowed. Anything else fails the test at teardown,
with the record and the lines around it.

Processes register their logs here (`watch`): the harness's SheepProcess,
sheepfs mounts and nbdkit exports of the tests, cluster members' stderr
(`check_text`). A log is read again (`collect`) when its process has
stopped, since some live on mounts that go away with the test (the
power-cut tests); at teardown every registered log is read a last time and
every `sheep.log` under the test's tmp_path is read too (a sheep that a
script or `dog` started).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

TRACEBACK = "Traceback (most recent call last)"
# The first line of a record in a log file: sheep's "TS LEVEL [name] msg",
# sheepfs's "TS sheepfs[pid] LEVEL name: msg".
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:\S+\[\d+\] )?(?P<level>[A-Z]+) ")
_ERROR_LEVELS = ("ERROR", "CRITICAL")
_CHAIN = ("During handling of the above exception", "The above exception was the direct cause")
BEFORE, AFTER = 6, 3  # lines of context shown around a finding in a file
SHOWN = 8  # findings shown in full when a test fails


@dataclass(frozen=True)
class Kind:
    """How to read one kind of log.

    `records`: a logging file whose records start with a timestamp.
    Otherwise a stream (stderr): `copy` matches a line that copies a
    record of a log file read on its own (sheep -f's "sheep: ERROR: ...",
    skipped with a traceback right under it); `error` matches a line that
    is an error by itself."""

    name: str
    records: bool = False
    copy: re.Pattern[str] | None = None
    error: re.Pattern[str] | None = None


LOG = Kind("log", records=True)
SHEEP_STDERR = Kind("sheep stderr", copy=re.compile(r"^sheep: [A-Z]+: "))
STDERR = Kind("stderr")
NBDKIT_STDERR = Kind("nbdkit stderr", error=re.compile(r"^nbdkit: .*\berror: "))
# cluster_member.py logs with logging.basicConfig's "LEVEL:name:message".
MEMBER_STDERR = Kind("member stderr", error=re.compile(r"^(?:ERROR|CRITICAL):"))


@dataclass
class Finding:
    where: str
    text: str  # what the expected regexes are matched against
    context: str  # what is shown: the text with lines around it


@dataclass
class _Source:
    kind: Kind
    seen: str = ""  # the text read (and scanned) so far


def _traceback_end(lines: list[str], i: int) -> int:
    """The index after the traceback whose first line is lines[i]: its
    indented lines, the exception line, and any chained tracebacks."""
    group = lines[i].startswith((" ", "\t"))  # an exception group's: all indented
    j = i + 1
    while j < len(lines):
        line = lines[j]
        if line.startswith(_CHAIN):  # then a blank line and the next traceback
            j += 1
            while j < len(lines) and not lines[j].strip():
                j += 1
        elif line.startswith((" ", "\t")) or TRACEBACK in line:
            j += 1
        elif not line.strip() and j + 1 < len(lines) and lines[j + 1].startswith(_CHAIN):
            j += 1
        elif not line.strip() or group:
            break
        else:  # the exception line; a chained one may follow
            j += 1
            if not (j + 1 < len(lines) and not lines[j].strip()
                    and lines[j + 1].startswith(_CHAIN)):
                break
    return j


def _context(lines: list[str], start: int, end: int) -> str:
    lo, hi = max(0, start - BEFORE), min(len(lines), end + AFTER)
    return "\n".join(("> " if start <= k < end else "  ") + lines[k] for k in range(lo, hi))


def scan(text: str, kind: Kind, where: str) -> list[Finding]:
    """The errors in `text`, a log of kind `kind`."""
    lines = text.splitlines()
    found: list[Finding] = []

    def add(start: int, end: int) -> None:
        found.append(Finding(where, "\n".join(lines[start:end]), _context(lines, start, end)))

    if kind.records:
        starts = [k for k, line in enumerate(lines) if _RECORD.match(line)]
        if not starts or starts[0] != 0:
            starts.insert(0, 0)
        for a, b in zip(starts, [*starts[1:], len(lines)], strict=True):
            m = _RECORD.match(lines[a]) if a < len(lines) else None
            block = lines[a:b]
            if (m and m["level"] in _ERROR_LEVELS) or any(TRACEBACK in ln for ln in block):
                add(a, b)
        return found
    k = 0
    while k < len(lines):
        line = lines[k]
        if kind.copy is not None and kind.copy.match(line):
            k += 1
            if k < len(lines) and TRACEBACK in lines[k]:
                k = _traceback_end(lines, k)
        elif kind.error is not None and kind.error.match(line):
            end = k + 1
            if end < len(lines) and TRACEBACK in lines[end]:
                end = _traceback_end(lines, end)
            add(k, end)
            k = end
        elif TRACEBACK in line:
            end = _traceback_end(lines, k)
            add(k, end)
            k = end
        else:
            k += 1
    return found


def _unseen_part(old: str, new: str) -> int:
    """Where `new` (a log read again) stops repeating `old`: its length if
    the file only grew; else (a power cut cut it, and a restarted process
    wrote on) the first line that starts after the two part."""
    if new.startswith(old):
        return len(old)
    n = len(os.path.commonprefix([old, new]))
    if n == 0 or new[n - 1] == "\n":
        return n
    return new.find("\n", n) + 1 or len(new)


class _Handler(logging.Handler):
    def __init__(self, watch: LogWatch) -> None:
        super().__init__(logging.WARNING)
        self.watch = watch
        self.setFormatter(logging.Formatter("%(levelname)s [%(name)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        top = record.name.split(".")[0]
        if not (record.name == "root" or top.startswith("sheep")):
            return
        if record.levelno < logging.ERROR and not record.exc_info:
            return
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is still one
            text = f"{record.levelname} [{record.name}] {record.msg!r} {record.args!r}"
        self.watch.found.append(Finding("this process's logging", text, text))


@dataclass
class LogWatch:
    """The logs of one test and the errors it expects."""

    expected: list[re.Pattern[str]] = field(default_factory=list)
    found: list[Finding] = field(default_factory=list)
    sources: dict[Path, _Source] = field(default_factory=dict)

    def expect(self, *regexes: str) -> None:
        self.expected += [re.compile(r) for r in regexes]

    def watch(self, path: Path, kind: Kind) -> None:
        self.sources.setdefault(Path(path), _Source(kind))

    def collect(self, path: Path) -> None:
        """Scan what `path` gained since it was last read."""
        src = self.sources.setdefault(Path(path), _Source(LOG))
        try:
            text = Path(path).read_bytes().decode(errors="replace")
        except OSError:
            return
        # Read again from where the file parts from what was read: it grew,
        # or was cut (a power cut) and written on.
        self.found += scan(text[_unseen_part(src.seen, text):], src.kind, str(path))
        src.seen = text

    def check_text(self, text: str, kind: Kind, where: str) -> None:
        self.found += scan(text, kind, where)

    def unexpected(self) -> list[Finding]:
        out, shown = [], set()
        for f in self.found:
            if any(p.search(f.text) for p in self.expected):
                continue
            if f.text in shown:  # the same record read from two copies
                continue
            shown.add(f.text)
            out.append(f)
        return out

    def report(self) -> str | None:
        bad = self.unexpected()
        if not bad:
            return None
        parts = [f"{len(bad)} unexpected error(s) in the logs (a test that means to cause "
                 "one declares it: @pytest.mark.expected_errors(r'regex') or "
                 "expect_error_log('regex')):"]
        for f in bad[:SHOWN]:
            parts.append(f"--- {f.where}:\n{f.context}")
        if len(bad) > SHOWN:
            parts.append(f"... and {len(bad) - SHOWN} more")
        return "\n".join(parts)

    def handler(self) -> logging.Handler:
        return _Handler(self)


# The running test's watch (set by conftest's autouse fixture).
CURRENT: LogWatch | None = None


def watch(path: Path, kind: Kind) -> None:
    """Register a log of a process this test started."""
    if CURRENT is not None:
        CURRENT.watch(path, kind)


def collect(path: Path) -> None:
    """Read a registered log now (its process stopped; its file may go
    away with a mount before the test ends)."""
    if CURRENT is not None and Path(path) in CURRENT.sources:
        CURRENT.collect(path)


def check_text(text: str, kind: Kind, where: str) -> None:
    """Scan a log that lives in memory only (a member's stderr)."""
    if CURRENT is not None:
        CURRENT.check_text(text, kind, where)


def sheep_logs_under(root: Path) -> list[Path]:
    """Every sheep.log under `root` (a sheep started by a script or dog)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d))]
        if "sheep.log" in filenames:
            found.append(Path(dirpath) / "sheep.log")
    return found
