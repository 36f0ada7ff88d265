"""A sheep's log: one line per record with node, epoch and request id, in
text or JSON (--log-format=json), reopened on SIGHUP, rotated by real
logrotate with contrib/logrotate.d/sheepblk."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SheepFactory, SheepProcess, run_dog, wait_for

from sheepblk.proto import Flag, Op, Res
from sheepblk.server.logs import FIELDS, REQUEST, JsonFormatter, OneLineFormatter

ROOT = Path(__file__).resolve().parent.parent
# SET_LOGLEVEL with a level past debug: refused (a WARNING logged while the
# request is served, so the line names it).
BAD_LEVEL = (9).to_bytes(4, "little")


def refuse_one(node: SheepProcess) -> None:
    with node.client() as c:
        rsp, _ = c.request(Op.SET_LOGLEVEL, flags=Flag.CMD_WRITE, data=BAD_LEVEL, check=False)
    assert rsp.result == Res.INVALID_PARMS


def test_text_lines_name_node_epoch_and_request(one_node: SheepProcess) -> None:
    refuse_one(one_node)
    lines = (one_node.store / "sheep.log").read_text().splitlines()
    me = f"127.0.0.1:{one_node.port}"
    for line in lines:
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[[\w.]+\] .* "
                        rf"\[node={re.escape(me)} epoch=\d+ req=\S+\]$", line), line
    refused = [ln for ln in lines if "refusing SET_LOGLEVEL" in ln]
    assert len(refused) == 1
    assert re.search(rf" epoch=1 req={re.escape(me)}/\d+#\d+\]$", refused[0]), refused[0]
    assert any("sheepdog daemon" in ln and " req=-]" in ln for ln in lines)


def test_a_traceback_stays_on_its_line() -> None:
    try:
        raise ValueError("two\nlines")
    except ValueError:
        record = logging.LogRecord("sheep", logging.ERROR, __file__, 1, "failed %s", ("x",),
                                   sys.exc_info())
    token = REQUEST.set(("127.0.0.1:7000/3", 12))
    try:
        FIELDS.filter(record)
    finally:
        REQUEST.reset(token)
    text = OneLineFormatter().format(record)
    assert "\n" not in text
    assert "failed x [node=" in text
    assert "req=127.0.0.1:7000/3#12]\\nTraceback (most recent call last)" in text
    assert "ValueError: two\\nlines" in text
    obj = json.loads(JsonFormatter().format(record))
    assert (obj["level"], obj["logger"], obj["req"], obj["msg"]) == \
        ("ERROR", "sheep", "127.0.0.1:7000/3#12", "failed x")
    assert obj["exc"].startswith("Traceback") and obj["exc"].endswith("ValueError: two\nlines")


@pytest.mark.parametrize("option", [["--log-format=json"], ["-l", "level=info,format=json"]])
def test_json_log(sheep_factory: SheepFactory, option: list[str]) -> None:
    (node,) = sheep_factory.start(1, extra=option)
    run_dog(node, "cluster", "format", "--copies=1")
    refuse_one(node)
    records = [json.loads(ln) for ln in (node.store / "sheep.log").read_text().splitlines()]
    assert records and all(set(r) >= {"time", "level", "logger", "node", "epoch", "req", "msg"}
                           for r in records)
    assert {r["node"] for r in records} == {f"127.0.0.1:{node.port}"}
    (refused,) = [r for r in records if r["msg"].startswith("refusing SET_LOGLEVEL")]
    assert refused["level"] == "WARNING" and refused["epoch"] == 1
    assert refused["req"].startswith(f"127.0.0.1:{node.port}/")


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate not installed")
def test_logrotate_moves_the_log_and_the_sheep_reopens_it(one_node: SheepProcess,
                                                            tmp_path: Path) -> None:
    log = one_node.store / "sheep.log"
    snippet = (ROOT / "contrib" / "logrotate.d" / "sheepblk").read_text()
    conf = tmp_path / "logrotate.conf"
    conf.write_text(snippet.replace("/var/lib/sheepblk/sheep.log /var/lib/sheepblk/*/sheep.log",
                                    str(log)))
    conf.chmod(0o644)
    before = log.read_text()
    subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(conf)], check=True,
                   timeout=60)
    rotated = one_node.store / "sheep.log.1"
    assert rotated.read_text().startswith(before)
    # The sheep got SIGHUP from the snippet's postrotate: its next lines go to
    # a new sheep.log of the old name.
    wait_for(lambda: log.exists() and "got SIGHUP: reopened 1 log file(s)" in log.read_text(),
             "sheep.log reopened", 30)
    refuse_one(one_node)
    assert "refusing SET_LOGLEVEL" in log.read_text()
    assert "refusing SET_LOGLEVEL" not in rotated.read_text()
    assert run_dog(one_node, "node", "stat").returncode == 0
    # A stopped sheep's pid file is left alone: no signal goes to its old pid.
    one_node.stop()
    subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(conf)], check=True,
                   timeout=60)
