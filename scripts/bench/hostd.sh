#!/usr/bin/env bash
# hostd's benchmarks, each against a baseline measured in the same run:
#   - create → AVAILABLE through hostd vs `virsh create` of the same domain XML + boot to the
#     guest agent (goal: hostd adds ≤ 10 %), and qemu's host memory beyond guest RAM;
#   - the teardown scrub (zero + read back) of 1 GiB and 4 GiB of guest RAM, on 4 KiB and on
#     2 MiB pages, vs (a) pwrite of zeros over a populated 4 KiB-page memfd of the same size
#     (the zeroing limit; goal: scrub ≥ 0.5× (a)) and (b) memset of the already-mapped RAM;
#     and the teardown time of the RAM (scrub + punch; goal for 4 GiB: < 1 s).
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
MEMSCRUB_BENCH_GIB=${MEMSCRUB_BENCH_GIB:-1,4} go test ./hostd/memscrub/ -run '^$' -bench Scrub -benchtime 5x -count 3
go test ./hostd/controller/ -run '^$' -bench CreateToAvailable -benchtime ${N:-5}x 2>&1 | grep -v 'level='
# The fleet store (etcd, 3 members on loopback) against the bbolt file, in one run each.
go test ./hostd/controller/ -run '^$' -bench 'CreateToAvailableEtcd' -benchtime ${N:-5}x -timeout 60m 2>&1 | grep -v 'level='
go test ./hostd/controller/ -run '^$' -bench 'DescribeWorkspaces1000|WatchLatency' -benchtime 200x 2>&1 | grep -v 'level='
go test ./hostd/store/ -run '^$' -bench MemberLoss -benchtime 3x
