"""`HOST:PORT` (or a bare PORT, or `[V6ADDR]:PORT`) of a metrics endpoint."""

from __future__ import annotations

# Where a bare port listens: the metrics of a storage node say which VDIs
# and hosts it serves, so nothing is exposed beyond this host unless asked.
DEFAULT_HOST = "127.0.0.1"


def parse_endpoint(spec: str) -> tuple[str, int]:
    """-> (host, port); ValueError saying what is wrong."""
    host, sep, port = spec.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, spec
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{spec!r}: write an IPv6 address as [ADDR]:PORT")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{spec!r}: the port must be a number from 1 to 65535")
    return host or DEFAULT_HOST, int(port)


class MetricsListenError(OSError):
    """The metrics endpoint cannot be bound (its address in the message)."""

    @classmethod
    def of(cls, host: str, port: int, e: OSError) -> MetricsListenError:
        return cls(e.errno, f"cannot serve metrics on {host}:{port}: {e.strerror or e}")
