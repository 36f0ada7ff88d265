"""Latency buckets shared by every sheepblk histogram, in seconds (+Inf is
implicit): 50 us (an inline read from the page cache) to 10 s (a request
that waited through a change of epoch)."""

LATENCY_BOUNDS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
