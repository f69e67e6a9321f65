#!/usr/bin/env bash
# Runs every test against real components: starts libvirtd (unless one of ours already
# runs), runs `go test ./...`, stops what it started. CI sets CI=true, which turns every
# "skipped: missing X" into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNDIR=${RUNDIR:-/run/deskhost}
IMAGE=${IMAGE:-build/images/desktop}
export PATH=/usr/local/go/bin:$PATH

started=no
if ! bin/libvirtrun status --root "$RUNDIR/libvirt" >/dev/null 2>&1; then
  bin/libvirtrun start --root "$RUNDIR/libvirt"
  started=yes
fi
stop() { [ "$started" = yes ] && bin/libvirtrun stop --root "$RUNDIR/libvirt" || true; }
trap stop EXIT

export DESKHOST_LIBVIRT_SOCKET="$RUNDIR/libvirt/run/libvirt-sock"
export DESKHOST_IMAGE="$PWD/$IMAGE"
export DESKHOST_BIN="$PWD/bin"
echo "test.sh: libvirtd at $DESKHOST_LIBVIRT_SOCKET, image $DESKHOST_IMAGE, CI=${CI:-}"
go vet ./...
go test -count=1 -timeout 60m ./... "$@"
