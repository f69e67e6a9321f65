#!/usr/bin/env bash
# hostd's benchmarks, each against a baseline measured in the same run:
#   - create → AVAILABLE through hostd vs `virsh create` of the same domain XML + boot to the
#     guest agent (goal: hostd adds ≤ 10 %), and qemu's host memory beyond guest RAM;
#   - the teardown scrub vs a plain memset of the same guest RAM (goal ≥ 0.8×);
#   - the fleet store: create → AVAILABLE on etcd vs bbolt (goal ≤ 1.10×), DescribeWorkspaces
#     with 1,000 WorkSpaces, watch latency, writes while one etcd member is lost.
# Needs what `make test` needs (root, libvirtd via scripts/libvirtrun, the desktop image).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNDIR=${RUNDIR:-/run/deskhost}
export PATH=/usr/local/go/bin:$PATH
make -s build image
started=no
if ! bin/libvirtrun status --root "$RUNDIR/libvirt" >/dev/null 2>&1; then
  bin/libvirtrun start --root "$RUNDIR/libvirt"; started=yes
fi
trap '[ "$started" = yes ] && bin/libvirtrun stop --root "$RUNDIR/libvirt"' EXIT
export DESKHOST_LIBVIRT_SOCKET="$RUNDIR/libvirt/run/libvirt-sock" DESKHOST_IMAGE="$PWD/build/images/desktop"
go test ./hostd/memscrub/ -run '^$' -bench ScrubVsMemset -benchtime 20x -count 5
go test ./hostd/controller/ -run '^$' -bench CreateToAvailable -benchtime ${N:-5}x 2>&1 | grep -v 'level='
# The fleet store (etcd, 3 members on loopback) against the bbolt file, in one run each.
go test ./hostd/controller/ -run '^$' -bench 'CreateToAvailableEtcd' -benchtime ${N:-5}x -timeout 60m 2>&1 | grep -v 'level='
go test ./hostd/controller/ -run '^$' -bench 'DescribeWorkspaces1000|WatchLatency' -benchtime 200x 2>&1 | grep -v 'level='
go test ./hostd/store/ -run '^$' -bench MemberLoss -benchtime 3x
