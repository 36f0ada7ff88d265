#!/usr/bin/env bash
# Install everything sheepblk needs on Debian 12, as root: Debian packages
# and a virtual environment in .venv with the project installed (editable).
#   scripts/setup.sh          runtime: daemon, dog, nbdkit plugin, sheepfs
#   scripts/setup.sh --test   also what the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."

APT_RUNTIME=(
  python3 python3-venv python3-dev gcc pkg-config
  fuse3 libfuse3-dev                 # sheepfs (pyfuse3 builds against libfuse3)
  nbdkit nbdkit-plugin-python        # the NBD frontend
  python3-prometheus-client          # the nbdkit plugin's metrics= (nbdkit embeds Debian's python3)
  libnbd-bin                         # nbdfuse, nbdcopy, nbdsh, nbdinfo
  zookeeper default-jre-headless     # the zookeeper cluster driver
  e2fsprogs fuse2fs util-linux procps
)
APT_TEST=(
  qemu-utils python3-libnbd fio
  qemu-system-common                 # qemu-storage-daemon (tests/test_attach_commands.py)
  libvirt-clients libxml2-utils      # virt-xml-validate and the xmllint it runs (tests/test_libvirt_xml.py)
  libvirt-daemon-system qemu-system-x86   # libvirtd + an emulator: virsh define/dumpxml in tests/test_libvirt_xml.py
  nftables                           # tests/multihost.py cuts links between hosts
  logrotate                          # contrib/logrotate.d/sheepblk run for real (tests/test_logs.py)
  corosync libcpg4                   # the corosync driver's tests (tests/corosync_server.py, test_cluster_drivers.py, test_cluster_corosync*.py)
  linux-image-cloud-amd64 busybox-static   # the guest kernel and initramfs of tests/test_vm_boot.py
)

want=("${APT_RUNTIME[@]}")
[ "${1:-}" = "--test" ] && want+=("${APT_TEST[@]}")
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Packages are installed, not started: corosync's, ZooKeeper's and
  # libvirt's services would otherwise start on install where an init
  # system runs, and a system corosync would become the default cluster
  # manager of every sheep (and the tests' own corosync would clash with
  # it). The tests and the demo start what they need. An existing
  # policy-rc.d (Docker's) is left as it is.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
if [ "${1:-}" = "--test" ]; then
  .venv/bin/pip install -q -e '.[test]'
else
  .venv/bin/pip install -q -e .
fi
echo "sheepblk installed: $(pwd)/.venv/bin/{sheep,dog,collie,sheepfs}"
