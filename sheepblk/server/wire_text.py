"""Text from the wire, made fit for a log line.

Why its own module: names and paths in requests come from anyone who
reaches the port; logged raw, a newline forges a log line and invalid
UTF-8 makes the log unreadable. Every log line that quotes the wire goes
through `shown`.
"""

from __future__ import annotations


def shown(text: str | bytes) -> str:
    """A name or path from the wire, fit for a log line: non-printable
    characters escaped, never raw bytes."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="backslashreplace")
    out = []
    for ch in text:
        out.append(ch if ch.isprintable() and ch != "\\" else ascii(ch)[1:-1])
    return "".join(out)
