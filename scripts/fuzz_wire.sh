#!/usr/bin/env bash
# The long wire-check fuzz campaign (issue 21): requests made from the table
# in sheepblk/server/wire_checks.py, valid and broken, at throwaway
# clusters; prints requests sent, opcodes covered, crashes, hangs, stray
# files and data changes, and exits non-zero if any were found.
#   scripts/fuzz_wire.sh --requests 100000 --seed 1
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python tests/wire_fuzz.py "$@"
