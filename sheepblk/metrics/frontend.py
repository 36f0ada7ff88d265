"""Counters of a frontend (the nbdkit plugin, sheepfs) and their endpoint.

Why prometheus_client's own Counter and Histogram here, where the sheep
keeps plain numbers (server/stats.py): nbdkit calls the plugin from many
threads at once, and these are thread-safe; a frontend's request already
costs tens of microseconds in Python, so their lock is small beside it,
and nothing is counted unless the user asked for metrics.

Why a thread of our own for the endpoint: nbdkit's plugin has no event
loop, and a thread started before nbdkit forks to the background would
not survive the fork. `MetricsServer` binds at once (a port in use fails
the start, with its address) and serves from a thread only once `start`
is called, after the fork.

Runs under nbdkit's embedded Python (Debian's python3 and its
python3-prometheus-client, 0.16), so nothing here needs more than that.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from .buckets import LATENCY_BOUNDS
from .endpoint import MetricsListenError


def result_of(error: BaseException | None) -> str:
    """"ok", or the errno's name in lower case ("eio"), or "error"."""
    if error is None:
        return "ok"
    code = getattr(error, "errno", None)
    return errno.errorcode.get(code, "error").lower() if isinstance(code, int) else "error"


class FrontendMetrics:
    """Requests by op and result, their latency by op, bytes read and
    written, requests in flight: `{prefix}_requests_total{op,result}`,
    `{prefix}_request_duration_seconds{op}`, `{prefix}_read_bytes_total`,
    `{prefix}_written_bytes_total`, `{prefix}_requests_in_flight`."""

    def __init__(self, prefix: str, what: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter(f"{prefix}_requests", f"{what} requests answered, by op "
                                 "and result (ok, or the errno's name)", ["op", "result"],
                                 registry=r)
        self._latency = Histogram(f"{prefix}_request_duration_seconds",
                                  f"Time {what} took to answer a request, by op", ["op"],
                                  buckets=LATENCY_BOUNDS, registry=r)
        self._read = Counter(f"{prefix}_read_bytes", f"Bytes {what} read for its clients",
                             registry=r)
        self._written = Counter(f"{prefix}_written_bytes",
                                f"Bytes {what} wrote for its clients", registry=r)
        self._in_flight = Gauge(f"{prefix}_requests_in_flight",
                                f"Requests {what} is serving", registry=r)
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def start(self) -> float:
        """A request begins: its start time, for `done`."""
        self._in_flight.inc()
        return time.perf_counter()

    def done(self, op: str, started: float, *, read: int = 0, written: int = 0,
             error: BaseException | None = None) -> None:
        """A request ended (with `error`, if it failed)."""
        seconds = time.perf_counter() - started
        result = result_of(error)
        children = self._children.get((op, result))
        if children is None:
            children = self._children[(op, result)] = (
                self._requests.labels(op, result), self._latency.labels(op))
        children[0].inc()
        children[1].observe(seconds)
        if read:
            self._read.inc(read)
        if written:
            self._written.inc(written)
        self._in_flight.dec()


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per scrape."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


class MetricsServer:
    """prometheus_client's WSGI app for `registry` on host:port."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(ThreadingWSGIServer):
            address_family = family

        try:
            self.httpd = make_server(host, port, make_wsgi_app(registry), Server,
                                     handler_class=_QuietHandler)
        except OSError as e:
            raise MetricsListenError.of(host, port, e) from None
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        """Serve from a daemon thread (call after any fork)."""
        if self.thread is None:
            self.thread = threading.Thread(target=self.httpd.serve_forever,
                                           name="sheepblk-metrics", daemon=True)
            self.thread.start()

    def close(self) -> None:
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join()
            self.thread = None
        self.httpd.server_close()
