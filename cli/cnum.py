"""Numbers read the way Sheepdog's C tools read them (strtoll base 10):
its tests feed the tools values like "+", "42a", " 7" and 2**63, and
expect exactly C's verdict on each."""

from __future__ import annotations

import re

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# strtoll: leading white space, an optional sign, then at least one digit.
_STRTOLL = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def strtoll(text: str) -> int | None:
    """The value strtoll gives for the whole of `text`, or None where C
    code that checks endptr and errno rejects it: nothing converted,
    characters left over, or outside the signed 64-bit range."""
    m = _STRTOLL.fullmatch(text)
    if m is None:
        return None
    value = int(m.group(1))
    if not _INT64_MIN <= value <= _INT64_MAX:
        return None
    return value


def str_to_uint(text: str, maximum: int) -> int | None:
    """Sheepdog's str_to_u32 / str_to_u16 (lib/util.c): a strtoll value
    from 0 to `maximum`, else None."""
    value = strtoll(text)
    if value is None or not 0 <= value <= maximum:
        return None
    return value
