"""How a sheep's log lines look, and the log file logrotate can move.

Every record is one line that says which node wrote it, at which epoch,
and for which request (`req=NODE/CONN#ID`: the connection's key, as lock
owners are named, and the request's id on it; `-` outside a request), so
that `grep req=127.0.0.1:7000/5#12` finds all that one request caused on
that node. Text (the default) keeps "TIME LEVEL [logger] message" as
before (scripts and tests grep for it) and adds the fields after it, in
brackets, with the newlines of a traceback escaped as `\\n`; JSON (`--log-format=json`, or C sheep's `-l format=json`) is one
object per line.

The file is reopened on SIGHUP (the daemon's signal task calls
`reopen_logs`), so logrotate can rename it and signal the daemon
(contrib/logrotate.d/sheepblk).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextvars import ContextVar

# The request the current task serves: (connection key, request id), set by
# conn.py for each request it hands to the node.
REQUEST: ContextVar[tuple[str, int] | None] = ContextVar("REQUEST", default=None)

# The fields go after the message: "TIME LEVEL [logger] message" stays as
# it was, for the scripts (and tests) that look for it.
TEXT = "%(asctime)s %(levelname)s [%(name)s] %(message)s [node=%(node)s epoch=%(epoch)s req=%(req)s]"
FORMATS = ("text", "json")


class NodeFields(logging.Filter):
    """Adds `node`, `epoch` and `req` to every record a handler emits (a
    handler's filter sees the records of every logger, a logger's only
    its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.node = "-"
        self.epoch: Callable[[], int] = lambda: 0

    def attach(self, node: str, epoch: Callable[[], int]) -> None:
        """From now on, records name this node and its epoch."""
        self.node, self.epoch = node, epoch

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        try:
            record.epoch = self.epoch()
        except Exception:  # noqa: BLE001 - a log line must never fail
            record.epoch = 0
        req = REQUEST.get()
        record.req = f"{req[0]}#{req[1]}" if req is not None else "-"
        return True


FIELDS = NodeFields()


class OneLineFormatter(logging.Formatter):
    """TEXT, with a traceback's (or a message's) line breaks escaped."""

    def __init__(self) -> None:
        super().__init__(TEXT)

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601), level, logger, node,
    epoch, req, msg, and exc when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
               "level": record.levelname, "logger": record.name,
               "node": getattr(record, "node", "-"), "epoch": getattr(record, "epoch", 0),
               "req": getattr(record, "req", "-"), "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def formatter(kind: str) -> logging.Formatter:
    """The formatter of `kind` ("text" or "json")."""
    return JsonFormatter() if kind == "json" else OneLineFormatter()


class ReopenableFileHandler(logging.FileHandler):
    """A log file that `reopen` opens again by its name: after logrotate
    renamed it, new records go to a new file of the old name."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.flush()
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def reopen_logs() -> int:
    """Reopen every log file of the root logger; how many."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, ReopenableFileHandler)]
    for h in handlers:
        h.reopen()
    return len(handlers)
