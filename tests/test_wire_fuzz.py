"""The wire-check fuzz campaigns (tests/wire_fuzz.py), short: requests made
from the table, valid and broken, at a throwaway 3-node cluster; then the
destructive opcodes too, at another. The long run is the same module as a
script (`python tests/wire_fuzz.py --requests 100000`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import SheepFactory
from wire_fuzz import destructive_campaign, keep_campaign

from sheepblk.proto import Op
from sheepblk.server.wire_checks import TABLE

REQUESTS = int(os.environ.get("SHEEPBLK_WIRE_FUZZ_REQUESTS", "20000"))
# Each stop and restart of a node costs about a second: fewer of these.
DESTRUCTIVE_REQUESTS = int(os.environ.get("SHEEPBLK_WIRE_FUZZ_DESTRUCTIVE", "300"))
SEED = int(os.environ.get("SHEEPBLK_WIRE_FUZZ_SEED", "7"))


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The nodes' working directory (listed before and after) and a spare
    directory md plug requests may name."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    disk = tmp_path / "spare-disk"
    disk.mkdir()
    return disk


def test_table_requests_change_nothing_they_may_not(sheep_factory: SheepFactory,
                                                    work: Path) -> None:
    tally = keep_campaign(sheep_factory, REQUESTS, SEED, work=work)
    print(tally.summary("keep"))
    assert tally.refused_as_expected > REQUESTS // 3
    # All but the destructive ones with no field to break.
    assert tally.table_opcodes == set(TABLE) - {Op.SHUTDOWN, Op.KILL_NODE, Op.FORCE_RECOVER,
                                                Op.ENABLE_RECOVER, Op.DISABLE_RECOVER}
    assert tally.problems() == []


def test_destructive_requests_stop_only_what_they_ask(sheep_factory: SheepFactory,
                                                      work: Path) -> None:
    tally = destructive_campaign(sheep_factory, DESTRUCTIVE_REQUESTS, SEED, work=work)
    print(tally.summary("destructive"))
    assert tally.table_opcodes == set(TABLE)
    assert tally.problems() == []
