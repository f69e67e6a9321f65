#!/usr/bin/env bash
# make demo: boot the appliance image in QEMU as a virtual host over PXE. imagebuild serve
# serves the PXE bundle on the loopback; qemu's user network hands its iPXE ROM an address
# and http://10.0.2.2:PORT/boot.ipxe (10.0.2.2 is this machine's loopback as the guest sees
# it), and imagebuild serve answers iPXE as a ProxyDHCP server on the management NIC's
# network (qemu filters on the netdev, see --proxydhcp-qemu), so iPXE does not wait ~3 s
# for one.
# The host has two NICs (management and primary) and a disk flashed with the image's
# disk.img, whose blank /perm partition the first boot formats and later boots keep. The
# NICs' MACs are made up on the first demo and kept with the disk (no config names them:
# the host finds its management NIC as the one it network-booted from, BOOTIF).
# The serial console is this terminal: Ctrl-A X quits qemu, Ctrl-A C toggles its monitor.
set -euo pipefail
cd "$(dirname "$0")/.."
APPLIANCE=${APPLIANCE:-build/images/appliance}
STATE=${STATE:-build/appliance-demo}
PORT=${PORT:-8089}
BROKER_PORT=${BROKER_PORT:-8443}

for f in "$APPLIANCE/pxe/boot.ipxe" "$APPLIANCE/disk.img"; do
  [ -f "$f" ] || { echo "appliance-demo: $f missing: run make appliance" >&2; exit 1; }
done
mkdir -p "$STATE"
# The host's disk: a copy-on-write child of disk.img, kept between demos (rm -r
# $STATE for a fresh one).
if [ ! -f "$STATE/disk.qcow2" ]; then
  qemu-img create -q -f qcow2 -F raw -b "$PWD/$APPLIANCE/disk.img" "$STATE/disk.qcow2"
fi
if [ ! -f "$STATE/macs" ]; then
  for nic in MGMT_MAC PRIMARY_MAC; do
    printf '%s=52:54:00:%s\n' "$nic" "$(od -An -tx1 -N3 /dev/urandom | sed 's/^ //; s/ /:/g')"
  done >"$STATE/macs"
fi
# shellcheck source=/dev/null
. "$STATE/macs"

bin/imagebuild serve --http "127.0.0.1:$PORT" --tftp "" --proxydhcp-qemu "$STATE/proxydhcp" --netdev mgmt \
  "$APPLIANCE/pxe" >"$STATE/serve.log" 2>&1 &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  grep -q "serving" "$STATE/serve.log" 2>/dev/null && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$STATE/serve.log" >&2; exit 1; }
  sleep 0.1
done
# The qemu options that attach the ProxyDHCP to netdev mgmt, as imagebuild serve printed them.
read -ra PROXYDHCP <<<"$(sed -n 's/^ProxyDHCP for a qemu guest: .*; qemu options: //p' "$STATE/serve.log")"
[ ${#PROXYDHCP[@]} -gt 0 ] || { echo "appliance-demo: imagebuild serve printed no ProxyDHCP options" >&2; cat "$STATE/serve.log" >&2; exit 1; }

cat <<EOF
appliance-demo: PXE bundle served at http://127.0.0.1:$PORT/ (log: $STATE/serve.log)
appliance-demo: booting a virtual host over PXE under qemu (TCG), NICs $MGMT_MAC (management) and $PRIMARY_MAC; its serial console follows.
appliance-demo: expect "deskhost: ready" in about half a minute; the broker is then at https://127.0.0.1:$BROKER_PORT
appliance-demo: Ctrl-A X quits qemu.
EOF
sleep 2
qemu-system-x86_64 -accel tcg -cpu Haswell-noTSX -smp 2 -m 2048 -display none -serial mon:stdio \
  -netdev "user,id=mgmt,net=10.0.2.0/24,bootfile=http://10.0.2.2:$PORT/boot.ipxe,hostfwd=tcp:127.0.0.1:$BROKER_PORT-:443" \
  -device "virtio-net-pci,netdev=mgmt,mac=$MGMT_MAC,bootindex=1" "${PROXYDHCP[@]}" \
  -netdev user,id=primary,net=10.0.3.0/24 \
  -device "virtio-net-pci,netdev=primary,mac=$PRIMARY_MAC" \
  -drive "file=$STATE/disk.qcow2,if=none,id=disk,format=qcow2" -device virtio-blk-pci,drive=disk \
  -device virtio-rng-pci \
  -boot n
