"""Text in and out exactly as C `dog` prints and parses it.

Sizes are parsed here like Sheepdog's option_parse_size(); the printing side
(strnumber, rows of the list commands, timestamps, raw escaping) lives in
sheepblk.client.report, shared with sheepfs, and is re-exported here.
"""

from __future__ import annotations

from sheepblk.client.report import (
    NODE_LIST_HEADER,
    VDI_LIST_HEADER,
    cluster_time,
    ctime_seconds,
    localtime_str,
    node_addr,
    node_list_row,
    raw_escape,
    redundancy,
    sort_nodes,
    strnumber,
    vdi_kind,
    vdi_list_row,
)

from .errors import EXIT_USAGE, QuietError

_SUFFIX_SHIFT = {"": 0, "b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}
U64_MAX = (1 << 64) - 1

__all__ = ['NODE_LIST_HEADER', 'U64_MAX', 'VDI_LIST_HEADER', 'cluster_time', 'ctime_seconds', 'localtime_str', 'node_addr', 'node_list_row', 'parse_size', 'raw_escape', 'redundancy', 'sort_nodes', 'strnumber', 'vdi_kind', 'vdi_list_row']


def parse_size(text: str) -> int:
    """'1G', '256M', '512K', '1T', '1.5G', '4096' or '4096B' to bytes.

    As Sheepdog does: a decimal number (fractions allowed) and at most one
    suffix letter of B, K, M, G, T or P (either case), powers of 1024.
    Raises QuietError(EXIT_USAGE) for anything else.
    """
    body = text.strip()
    suffix = ""
    if body and body[-1].isalpha():
        body, suffix = body[:-1], body[-1].lower()
    shift = _SUFFIX_SHIFT.get(suffix)
    try:
        if shift is None or not body or body.lower() in ("nan", "inf", "infinity"):
            raise ValueError(text)
        value = float(body)
    except ValueError:
        raise QuietError(f"Invalid size '{text}': use a number with an optional "
                         "B, K, M, G, T or P suffix", EXIT_USAGE) from None
    if value < 0:
        raise QuietError(f"Invalid size '{text}': sizes cannot be negative", EXIT_USAGE)
    if value.is_integer() and value < 2**53:
        size = int(value) << shift
    else:
        size = int(value * (1 << shift))
    if size > U64_MAX:
        raise QuietError(f"Invalid size '{text}': larger than 2^64 bytes", EXIT_USAGE)
    return size
