#!/usr/bin/env bash
# Install what the tests need, then run the whole suite (real sheep, nbdkit,
# FUSE, ZooKeeper processes started by the tests themselves).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test || exit 1
.venv/bin/ruff check sheepblk cli tests bench || exit 1
.venv/bin/mypy sheepblk cli tests bench || exit 1
# Every test must run: a skip (a missing tool) fails the run.
SHEEPBLK_NO_SKIP=1 .venv/bin/pytest -q -p no:cacheprovider --durations=15 "$@"
rc=$?
# pytest exits 5 when it collected nothing: that is a failure here.
[ $rc -eq 5 ] && { echo "pytest collected no tests" >&2; exit 1; }
exit $rc
