"""What clients did during a multi-host run, and whether the cluster kept
its promises (checked after the heal, Jepsen-style).

Blocks and values. A block is 4 KiB of a VDI at `offset(block)`; the test
gives every block exactly one writer, so a block's writes are sequential
and each one writes a value no other write has: every 512-byte sector
holds the same header "VDI/BLOCK/CLIENT/SEQ" padded out, so a read names
the write it saw, and a torn or foreign sector shows. The preallocation
writes CLIENT "init", SEQ 0.

The history is a JSON line per operation: client, gateway (the sheep it
went through), op ("w" or "r"), vdi, block, value, invoke and complete
times (CLOCK_MONOTONIC, shared by every process and namespace), outcome:
"ok", "fail" (the cluster answered an error) or "unknown" (no answer: a
timeout, a broken connection).

The rules (`check`):

- a write that did not end "ok" is indeterminate: a block store promises
  nothing about a failed write (some copies may hold it), so, as Jepsen
  does with indeterminate operations, it may take effect at any time
  after its invocation, or never;
- a read must return the last write acknowledged before the read began,
  or a later write invoked before the read ended (one in flight), or an
  indeterminate write (anything else is a stale read, a read of a value
  never written, or garbage);
- after the heal, each block reads back its last acknowledged write or a
  write after it, or an indeterminate one (else an acknowledged write was
  lost);
- during a split, no object took acknowledged writes through gateways on
  both sides once the session timeout had passed (a sheep cut off from
  ZooKeeper must stop serving by then).

An indeterminate write seen after a later acknowledged write completed is
legal by these rules but is counted (`late`): it is how a write a gateway
kept retrying after its client gave up would show. If it is what the
block holds after the heal, it is an anomaly all the same: for the
block's user an acknowledged write is lost.

Standard library only: the NBD worker runs under Debian's python.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

BLOCK = 4096
SECTOR = 512
MiB = 1 << 20
OBJ = 4 * MiB
BLOCKS_PER_OBJ = 4  # blocks 1 MiB apart: four in each 4 MiB object
INIT = "init/0"


def offset(block: int) -> int:
    return block * (OBJ // BLOCKS_PER_OBJ)


def object_of(block: int) -> int:
    return block // BLOCKS_PER_OBJ


def encode(vdi: str, block: int, value: str) -> bytes:
    """A block's bytes for `value` ("CLIENT/SEQ")."""
    sector = f"{vdi}/{block}/{value}\n".encode().ljust(SECTOR, b"#")
    assert len(sector) == SECTOR
    return sector * (BLOCK // SECTOR)


def decode(vdi: str, block: int, data: bytes | bytearray) -> str:
    """The value a block's bytes hold; "torn:..." when its sectors
    disagree, "foreign:..." when they name another block."""
    values = []
    for i in range(0, len(data), SECTOR):
        head = bytes(data[i:i + SECTOR]).split(b"\n", 1)[0].decode(errors="replace")
        values.append(head)
    if len(set(values)) != 1:
        return "torn:" + "|".join(sorted(set(values)))[:200]
    want = f"{vdi}/{block}/"
    if not values[0].startswith(want):
        return "foreign:" + values[0][:100]
    return values[0][len(want):]


@dataclass
class Op:
    client: str
    gateway: str
    op: str  # "w" or "r"
    vdi: str
    block: int
    value: str
    t0: float
    t1: float
    outcome: str  # ok | fail | unknown
    err: str = ""

    def line(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def load(paths: Iterable[Path]) -> list[Op]:
    ops = []
    for p in paths:
        if not p.exists():
            continue
        for raw in p.read_text().splitlines():
            if raw.strip():
                try:
                    ops.append(Op(**json.loads(raw)))
                except (ValueError, TypeError):
                    pass  # a line cut short by a killed worker
    return ops


@dataclass
class Split:
    """A partition with a gateway on each side: (start, end) in monotonic
    time, and the gateways ("ADDR:PORT") of each side."""

    start: float
    end: float
    side_a: set[str]
    side_b: set[str]


@dataclass
class Report:
    ops: int = 0
    reads: int = 0
    writes: int = 0
    acked: int = 0
    failed: int = 0
    unknown: int = 0
    anomalies: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.ops} ops ({self.writes} writes: {self.acked} acked, {self.failed} "
                f"failed, {self.unknown} unknown; {self.reads} reads), "
                f"{len(self.anomalies)} anomalies, {len(self.late)} late indeterminate writes")


def check(ops: list[Op], final: dict[tuple[str, int], str], splits: list[Split],
          grace: float) -> Report:
    """The rules of the module over a history; `final` holds what each
    block read after the heal; `grace`: how long after a split starts a
    cut-off gateway may still take writes (the session timeout)."""
    rep = Report(ops=len(ops))
    writes: dict[tuple[str, int], list[Op]] = defaultdict(list)
    reads: dict[tuple[str, int], list[Op]] = defaultdict(list)
    for o in ops:
        (writes if o.op == "w" else reads)[(o.vdi, o.block)].append(o)
        if o.op == "w":
            rep.writes += 1
            rep.acked += o.outcome == "ok"
            rep.failed += o.outcome == "fail"
            rep.unknown += o.outcome == "unknown"
        else:
            rep.reads += 1
    for key, ws in writes.items():
        ws.sort(key=lambda o: o.t0)
        writers = {w.client for w in ws}
        if len(writers) > 1:
            rep.anomalies.append(f"{key}: written by {sorted(writers)}: the test broke its rule")
    for key in set(writes) | set(reads) | set(final):
        ws = writes.get(key, [])
        index = {w.value: i for i, w in enumerate(ws)}
        for r in sorted(reads.get(key, []), key=lambda o: o.t0):
            if r.outcome == "ok":
                _check_read(rep, key, ws, index, r.value, r.t0, r.t1, f"read by {r.client} "
                            f"via {r.gateway} [{r.t0:.3f}, {r.t1:.3f}]")
        if key in final:
            _check_read(rep, key, ws, index, final[key], float("inf"), float("inf"),
                        "final read after the heal")
    for s in splits:
        _check_split(rep, writes, s, grace)
    return rep


def _check_read(rep: Report, key: tuple[str, int], ws: list[Op], index: dict[str, int],
                value: str, t0: float, t1: float, what: str) -> None:
    if value.startswith(("torn:", "foreign:")):
        rep.anomalies.append(f"{key}: {what} returned garbage: {value}")
        return
    if value.startswith("error:"):
        rep.anomalies.append(f"{key}: {what} failed: {value[6:]}")
        return
    acked = [i for i, w in enumerate(ws) if w.outcome == "ok" and w.t1 < t0]
    last = acked[-1] if acked else -1  # -1: the preallocated value
    if value == INIT:
        seen = -1
    elif value in index:
        seen = index[value]
    else:
        rep.anomalies.append(f"{key}: {what} returned {value!r}, never written there")
        return
    if seen >= 0 and ws[seen].t0 > t1:
        rep.anomalies.append(f"{key}: {what} returned {value!r}, written only after it")
        return
    if seen >= last:
        return
    if seen >= 0 and ws[seen].outcome != "ok":
        text = (f"{key}: {what} returned indeterminate {value!r} after "
                f"{ws[last].value!r} was acknowledged at {ws[last].t1:.3f}")
        rep.late.append(text)
        if t0 == float("inf"):
            # Legal for Jepsen (an indeterminate write may land any time),
            # but for the block's user the acknowledged write is gone.
            rep.anomalies.append(f"acknowledged write overwritten for good: {text}")
        return
    kind = "lost acknowledged write" if t0 == float("inf") else "stale read"
    rep.anomalies.append(f"{key}: {kind}: {what} returned {value!r}, but {ws[last].value!r} "
                         f"was acknowledged at {ws[last].t1:.3f} (via {ws[last].gateway})")


def _check_split(rep: Report, writes: dict[tuple[str, int], list[Op]], s: Split,
                 grace: float) -> None:
    sides: dict[tuple[str, int], dict[str, list[Op]]] = defaultdict(lambda: defaultdict(list))
    for (vdi, block), ws in writes.items():
        for w in ws:
            if w.outcome != "ok" or w.t0 < s.start + grace or w.t1 > s.end:
                continue
            side = "a" if w.gateway in s.side_a else "b" if w.gateway in s.side_b else ""
            if side:
                sides[(vdi, object_of(block))][side].append(w)
    for (vdi, obj), by in sorted(sides.items()):
        if len(by) == 2:
            a, b = by["a"][0], by["b"][0]
            rep.anomalies.append(
                f"split brain: object {obj} of {vdi} took writes on both sides of the split "
                f"at [{s.start:.3f}, {s.end:.3f}]: {a.value!r} via {a.gateway} at {a.t1:.3f}, "
                f"{b.value!r} via {b.gateway} at {b.t1:.3f}")
