#!/usr/bin/env bash
# The main job: a local 3-node sheepblk cluster on loopback, the VDI Alice
# written with dog, served over NBD by nbdkit and as a file by sheepfs, and
# the same bytes checked through each. Everything stays running afterwards.
#   bash scripts/demo.sh         start (after scripts/setup.sh)
#   bash scripts/demo.sh stop    stop what a previous run started (by pid)
# Settings: DEMO_DIR (default /tmp/sheepblk-demo), BASE_PORT (7000),
# NBD_SOCKET (DEMO_DIR/nbd.sock).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=$ROOT/.venv/bin
DEMO_DIR=${DEMO_DIR:-/tmp/sheepblk-demo}
BASE_PORT=${BASE_PORT:-7000}
NODES=3
COPIES=3
NBD_SOCKET=${NBD_SOCKET:-$DEMO_DIR/nbd.sock}
MNT=$DEMO_DIR/mnt
PIDS=$DEMO_DIR/pids

stop() {
  [ -d "$DEMO_DIR" ] || return 0
  if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u "$MNT" || true; fi
  if [ -f "$PIDS" ]; then
    while read -r pid what; do
      kill "$pid" 2>/dev/null && echo "stopped $what (pid $pid)" || true
    done < <(tac "$PIDS")   # frontends first, then the daemons
    sleep 1
    rm -f "$PIDS"
  fi
}

if [ "${1:-}" = "stop" ]; then stop; exit 0; fi

[ -x "$BIN/sheep" ] || { echo "run 'bash scripts/setup.sh' first" >&2; exit 1; }
stop
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR" "$MNT"
: > "$PIDS"
wait_port() {
  for _ in $(seq 1 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "nothing listens on port $1" >&2; return 1
}

echo "== starting $NODES sheep daemons (local driver, zones 0..$((NODES-1)))"
for i in $(seq 0 $((NODES-1))); do
  port=$((BASE_PORT + i))
  "$BIN/sheep" -f -c "local:$DEMO_DIR/shm" -z "$i" -p "$port" "$DEMO_DIR/store$i" \
    >"$DEMO_DIR/sheep$i.out" 2>&1 &
  echo "$! sheep:$port" >> "$PIDS"
  wait_port "$port"
done
DOG=("$BIN/dog")
P=(-p "$BASE_PORT")
for _ in $(seq 1 50); do
  [ "$("${DOG[@]}" node list -r "${P[@]}" | wc -l)" -ge "$NODES" ] && break
  sleep 0.2
done

echo "== dog cluster format --copies=$COPIES"
"${DOG[@]}" cluster format --copies=$COPIES "${P[@]}"
"${DOG[@]}" node list "${P[@]}"

echo "== dog vdi create Alice 1G; dog vdi write Alice < 64 MiB of data"
"${DOG[@]}" vdi create Alice 1G "${P[@]}"
head -c $((64 << 20)) /dev/urandom > "$DEMO_DIR/disk.raw"
"${DOG[@]}" vdi write Alice 0 $((64 << 20)) "${P[@]}" < "$DEMO_DIR/disk.raw"
"${DOG[@]}" vdi read Alice 0 $((64 << 20)) "${P[@]}" | cmp - "$DEMO_DIR/disk.raw"
"${DOG[@]}" vdi list "${P[@]}"

echo "== NBD: nbdkit python sheepblk/nbd_plugin.py vdi=Alice (unix socket $NBD_SOCKET)"
# nbdkit daemonizes itself (-P: its pid, written once it listens). Not -f in
# the background: Debian's nbdkit 1.32 then exits when this script does.
nbdkit -P "$DEMO_DIR/nbdkit.pid" -U "$NBD_SOCKET" --log=stderr \
  python "$ROOT/sheepblk/nbd_plugin.py" vdi=Alice address=127.0.0.1:$BASE_PORT \
  >"$DEMO_DIR/nbdkit.out" 2>&1
# The daemonized child writes the pid file; its parent may exit first.
for _ in $(seq 100); do [ -s "$DEMO_DIR/nbdkit.pid" ] && break; sleep 0.1; done
echo "$(cat "$DEMO_DIR/nbdkit.pid") nbdkit" >> "$PIDS"
nbdinfo "nbd+unix:///?socket=$NBD_SOCKET" | grep -E 'export-size|can_flush|can_trim' || true
nbdcopy "nbd+unix:///?socket=$NBD_SOCKET" "$DEMO_DIR/nbd-copy.raw"   # holes are skipped
cmp -n $((64 << 20)) "$DEMO_DIR/nbd-copy.raw" "$DEMO_DIR/disk.raw"
rm -f "$DEMO_DIR/nbd-copy.raw"
echo "NBD export reads back the bytes dog wrote"

echo "== sheepfs $MNT"
# In front (-f) and in the background, as the daemons: $! is its pid.
"$BIN/sheepfs" -f -p "$BASE_PORT" "$MNT" >"$DEMO_DIR/sheepfs.out" 2>&1 &
echo "$! sheepfs" >> "$PIDS"
sheepfs_pid=$!
for _ in $(seq 1 150); do
  mountpoint -q "$MNT" && break
  kill -0 "$sheepfs_pid" 2>/dev/null || { cat "$DEMO_DIR/sheepfs.out" >&2; exit 1; }
  sleep 0.2
done
mountpoint -q "$MNT" || { echo "sheepfs did not mount $MNT" >&2; exit 1; }
ls "$MNT" "$MNT/volume"
cat "$MNT/node/list"
echo "(volume/Alice is locked by the NBD export, so sheepfs serves it read-only here)"
cmp -n $((64 << 20)) "$MNT/volume/Alice" "$DEMO_DIR/disk.raw" && echo "sheepfs volume/Alice reads back the same bytes"

cat <<INFO

sheepblk demo is running:
  nodes      127.0.0.1:$BASE_PORT..$((BASE_PORT + NODES - 1)), stores in $DEMO_DIR/store*
  dog        $BIN/dog vdi list -p $BASE_PORT
  NBD        nbd+unix:///?socket=$NBD_SOCKET   (e.g. nbdinfo, nbdcopy, qemu-img)
  sheepfs    $MNT  (volume/, vdi/list, node/list, cluster/info)
stop it with: bash scripts/demo.sh stop
INFO
