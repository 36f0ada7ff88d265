"""Sheepdog's log levels, by name and as Python logging levels.

Sheepdog speaks syslog levels (0 emerg .. 7 debug): `sheep -l level=NAME`
takes their names or numbers, and sheepfs's -d means "debug" on the same
scale. Both tools then need the Python logging level that shows the same
messages; one map here keeps them from drifting apart.
"""

from __future__ import annotations

import logging

LOG_EMERG, LOG_ALERT, LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG = range(8)

LOG_LEVELS: dict[str, int] = {
    "emerg": LOG_EMERG, "alert": LOG_ALERT, "crit": LOG_CRIT, "err": LOG_ERR,
    "error": LOG_ERR, "warning": LOG_WARNING, "warn": LOG_WARNING, "notice": LOG_NOTICE,
    "info": LOG_INFO, "debug": LOG_DEBUG,
}

# Python has no notice, and nothing above error that sheepblk logs apart.
_PYTHON: dict[int, int] = {
    LOG_DEBUG: logging.DEBUG, LOG_INFO: logging.INFO, LOG_NOTICE: logging.INFO,
    LOG_WARNING: logging.WARNING, LOG_ERR: logging.ERROR,
}


def python_level(level: int) -> int:
    """The Python logging level for Sheepdog level `level`; anything
    outside 3..7 (crit and worse, or out of range) logs errors only."""
    return _PYTHON.get(level, logging.ERROR)
