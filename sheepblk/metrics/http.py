"""Serve a prometheus_client registry over HTTP from a trio task.

Why not prometheus_client's start_http_server: it scrapes from a thread
of its own, and the collectors of a sheep or sheepfs read state that their
trio thread changes as it goes (dicts that may change size mid-iteration).
Here a scrape runs in the trio thread itself, between two requests, and
only the slow part (walking the disks) goes to a worker thread, through
the `refresh` hook, before the exposition is made.

The HTTP side is the least a Prometheus server or curl needs: one GET per
connection (`Connection: close`), `/metrics` or `/`, anything else 404 or
405. The body is prometheus_client's generate_latest: its format, not ours.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .endpoint import MetricsListenError

log = logging.getLogger("sheepblk.metrics")

# A request's head larger than this, or slower than this, is dropped.
MAX_HEAD = 8192
HEAD_TIMEOUT = 10.0
# Scrapes served at once; a connection past them is closed at once (a
# client opening sockets without end holds no more than this many tasks).
MAX_CLIENTS = 16

Refresh = Callable[[], Awaitable[None]]


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    head = b""
    with trio.move_on_after(HEAD_TIMEOUT):
        while b"\r\n\r\n" not in head and b"\n\n" not in head:
            chunk = await stream.receive_some(MAX_HEAD)
            if not chunk:
                return None
            head += chunk
            if len(head) > MAX_HEAD:
                return None
        return head
    return None


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
              *, head_only: bool = False) -> bytes:
    """The whole answer; `head_only` (a HEAD request): without the body,
    with the length it would have."""
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + (
                b"" if head_only else body)


async def _answer(stream: trio.SocketStream, registry: CollectorRegistry,
                  refresh: Refresh | None) -> None:
    head = await _read_head(stream)
    if head is None:
        return
    method, _, rest = head.splitlines()[0].partition(b" ")
    path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        out = _response("405 Method Not Allowed", b"only GET\n")
    elif path not in (b"/", b"/metrics"):
        out = _response("404 Not Found", b"metrics are at /metrics\n")
    else:
        if refresh is not None:
            await refresh()
        out = _response("200 OK", generate_latest(registry), CONTENT_TYPE_LATEST,
                        head_only=method == b"HEAD")
    await stream.send_all(out)


async def open_metrics_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Bind host:port before anything else starts, so a port in use stops
    the program at once with a message naming it."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as e:
        raise MetricsListenError.of(host, port, e) from None


async def serve_metrics(listeners: list[trio.SocketListener], registry: CollectorRegistry, *,
                        refresh: Refresh | None = None) -> None:
    """Serve `registry` on `listeners` until cancelled."""

    clients = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal clients
        if clients >= MAX_CLIENTS:
            await stream.aclose()
            return
        clients += 1
        try:
            await _answer(stream, registry, refresh)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            log.debug("metrics client went away: %s", e)
        except Exception:
            log.exception("metrics scrape failed")
        finally:
            clients -= 1
            await stream.aclose()

    host, port = listeners[0].socket.getsockname()[:2]
    log.info("metrics on http://%s:%d/metrics", host, port)
    await trio.serve_listeners(handler, listeners)
