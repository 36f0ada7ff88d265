"""A client of a multi-host run, in its own process: writes its own 4 KiB
blocks and reads anyone's, one operation at a time, and appends each to
its history (tests/mh_history.py) until its stop file exists.

    mh_client.py CONFIG_JSON

`kind` "native": through our protocol client (SheepClient/Vdi), to the
gateways in order, moving to the next one when a request gets no answer
within `op_timeout`. `kind` "nbd": through libnbd to an nbdkit export of
the VDI (Debian's python runs this: `nbd` is its binding); each request
gets `op_timeout` before the client goes on without it, and is recorded
with its real end if that comes before the client stops (a block with a
write still out is not written again meanwhile).

Why processes: clients must go on while the test process cuts links,
and the NBD client needs Debian's python.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mh_history as H  # noqa: E402

NBD_WRITES_OUT = 8  # an NBD client with this many requests unanswered waits for them


class History:
    def __init__(self, path: str, client: str, gateway: str) -> None:
        self.f = open(path, "a")
        self.client, self.gateway = client, gateway

    def add(self, op: str, vdi: str, block: int, value: str, t0: float, t1: float,
            outcome: str, err: str = "") -> None:
        self.f.write(H.Op(self.client, self.gateway, op, vdi, block, value, t0, t1, outcome,
                          err[:300]).line() + "\n")
        self.f.flush()


def native(cfg: dict[str, Any]) -> None:
    sys.path.insert(0, cfg["root"])
    from sheepblk.client import ConnectionPool, SheepClient, SheepdogError, Vdi, parse_address

    rnd = random.Random(cfg["seed"])
    gateways: list[str] = cfg["gateways"]
    hist = History(cfg["history"], cfg["client"], gateways[0])
    stop = Path(cfg["stop"])
    seq = 0
    g = 0
    client: SheepClient | None = None
    vdis: dict[str, Vdi] = {}

    def drop() -> None:
        nonlocal client, g
        for v in vdis.values():
            try:
                v.close()
            except Exception:  # noqa: BLE001 - a broken connection: just go
                pass
        vdis.clear()
        if client is not None:
            client.close()
        client = None
        g = (g + 1) % len(gateways)

    def vdi(name: str) -> Vdi:
        nonlocal client
        if client is None:
            host, port = parse_address(gateways[g])
            client = SheepClient(pool=ConnectionPool(host, port, 2, timeout=cfg["op_timeout"]))
            hist.gateway = gateways[g]
        if name not in vdis:
            vdis[name] = Vdi(client, name, writable=name == cfg["vdi"])
        return vdis[name]

    while not stop.exists():
        write = bool(cfg["own"]) and rnd.random() < cfg["write_ratio"]
        if write:
            name, block = cfg["vdi"], rnd.choice(cfg["own"])
        else:
            name, block = rnd.choice(cfg["reads"])
        try:
            v = vdi(name)
        except Exception:  # noqa: BLE001 - nothing was sent: not an operation
            drop()
            time.sleep(cfg["pause"] * 10)
            continue
        if write:
            seq += 1
            value = f"{cfg['client']}/{seq}"
            t0 = time.monotonic()
            try:
                v.pwrite(H.encode(name, block, value), H.offset(block))
                hist.add("w", name, block, value, t0, time.monotonic(), "ok")
            except SheepdogError as e:
                hist.add("w", name, block, value, t0, time.monotonic(), "fail", str(e))
                drop()
            except Exception as e:  # noqa: BLE001 - no answer: indeterminate
                hist.add("w", name, block, value, t0, time.monotonic(), "unknown", repr(e))
                drop()
        else:
            t0 = time.monotonic()
            try:
                data = v.pread(H.BLOCK, H.offset(block))
                hist.add("r", name, block, H.decode(name, block, data), t0, time.monotonic(),
                         "ok")
            except SheepdogError as e:
                hist.add("r", name, block, "", t0, time.monotonic(), "fail", str(e))
                drop()
            except Exception as e:  # noqa: BLE001
                hist.add("r", name, block, "", t0, time.monotonic(), "unknown", repr(e))
                drop()
        time.sleep(cfg["pause"])
    drop()


def nbd_client(cfg: dict[str, Any]) -> None:
    import nbd

    rnd = random.Random(cfg["seed"])
    hist = History(cfg["history"], cfg["client"], cfg["gateways"][0])
    stop = Path(cfg["stop"])
    name = cfg["vdi"]
    h = nbd.NBD()
    h.connect_unix(cfg["socket"])
    seq = 0
    # cookie -> (op, block, value, t0, buffer)
    out: dict[int, tuple[str, int, str, float, Any]] = {}

    def retire(block_until: float) -> None:
        """Record what has ended; wait until `block_until` for the rest."""
        while True:
            for cookie in list(out):
                try:
                    done = h.aio_command_completed(cookie)
                    err = ""
                except nbd.Error as e:
                    done, err = True, str(e)
                if not done:
                    continue
                op, block, value, t0, buf = out.pop(cookie)
                t1 = time.monotonic()
                if op == "r" and not err:
                    value = H.decode(name, block, buf.to_bytearray())
                hist.add(op, name, block, value if op == "w" or not err else "", t0, t1,
                         "fail" if err else "ok", err)
            if not out or time.monotonic() >= block_until:
                return
            h.poll(100)

    while not stop.exists():
        busy = {b for op, b, *_ in out.values() if op == "w"}
        free = [b for b in cfg["own"] if b not in busy]
        if len(out) >= NBD_WRITES_OUT or not free:
            retire(time.monotonic() + 0.5)
            continue
        t0 = time.monotonic()
        block = rnd.choice(cfg["own"])
        if rnd.random() < cfg["write_ratio"]:
            block = rnd.choice(free)
            seq += 1
            value = f"{cfg['client']}/{seq}"
            buf = nbd.Buffer.from_bytearray(bytearray(H.encode(name, block, value)))
            cookie = h.aio_pwrite(buf, H.offset(block))
            out[cookie] = ("w", block, value, t0, buf)
        else:
            buf = nbd.Buffer(H.BLOCK)
            cookie = h.aio_pread(buf, H.offset(block))
            out[cookie] = ("r", block, "", t0, buf)
        retire(t0 + cfg["op_timeout"])
        time.sleep(cfg["pause"])
    retire(time.monotonic() + cfg["op_timeout"])
    for op, block, value, t0, _ in out.values():  # never answered
        hist.add(op, name, block, value if op == "w" else "", t0, time.monotonic(), "unknown",
                 "no answer before the client stopped")
    try:
        h.shutdown()
    except nbd.Error:
        pass


def main() -> None:
    cfg = json.loads(sys.argv[1])
    (nbd_client if cfg["kind"] == "nbd" else native)(cfg)
    print("done", os.getpid(), flush=True)


if __name__ == "__main__":
    main()
