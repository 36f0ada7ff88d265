"""Prometheus metrics of sheepblk's programs.

`endpoint` parses `--metrics HOST:PORT`; `http` serves a registry's text
exposition (prometheus_client's own) from a trio task, for the sheep and
sheepfs, whose state lives in their trio thread; the nbdkit plugin, which
has no trio loop, uses prometheus_client's threaded server instead.
"""

from .endpoint import MetricsListenError, parse_endpoint

__all__ = ["MetricsListenError", "parse_endpoint"]
