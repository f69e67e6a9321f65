#!/usr/bin/env bash
# make demo: libvirtd and hostd on this machine, one demo WorkSpace brought to AVAILABLE.
#   scripts/demo.sh start | stop
set -euo pipefail
cd "$(dirname "$0")/.."
RUNDIR=${RUNDIR:-/run/deskhost}
IMAGE=${IMAGE:-build/images/desktop}
STATE=$PWD/build/demo
CONFIG=$STATE/deskhost.yaml
PIDFILE=$RUNDIR/hostd-demo.pid
SOCK=$RUNDIR/hostd.sock
hostd() { bin/hostd "$@" --socket "$SOCK"; }
# The demo user's live WorkSpace id, or nothing.
demo_ws() {
  hostd workspaces --directory d-0123456789 --user demo --json |
    python3 -c 'import json,sys; w=[x for x in json.load(sys.stdin).get("Workspaces",[]) if x["State"]!="TERMINATED"]; print(w[0]["WorkspaceId"] if w else "")'
}

# The Value bundle's id, or nothing.
demo_bundle() {
  hostd bundles --json |
    python3 -c 'import json,sys; b=[x for x in json.load(sys.stdin).get("Bundles",[]) if x.get("Name")=="Value-Linux"]; print(b[0]["BundleId"] if b else "")'
}

# catalog makes the demo's catalog in hostd's store, once, as an operator would: the
# desktop image, three bundles, the directory (configs/demo-directory.yaml), registered.
catalog() {
  if ! hostd images --json | grep -q '"wsi-desktop001"'; then
    hostd images register --dir "$PWD/$IMAGE" --id wsi-desktop001 --name deskhost-desktop
  fi
  if [ -z "$(demo_bundle)" ]; then
    hostd bundles create --name Value-Linux --description "1 vCPU (TCG)" --image wsi-desktop001 --compute VALUE --user-gib 10
    hostd bundles create --name Standard-Linux --description "1 vCPU (TCG)" --image wsi-desktop001 --compute STANDARD --user-gib 50
    hostd bundles create --name Power-Linux --description "2 vCPU (TCG)" --image wsi-desktop001 --compute POWER --root-gib 175 --user-gib 100
  fi
  if ! hostd directories --json | grep -q '"d-0123456789"'; then
    hostd directory put --file configs/demo-directory.yaml
  fi
  if ! hostd directories --json | grep -q '"REGISTERED"'; then
    hostd directories register d-0123456789
  fi
}

stop() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill "$(cat "$PIDFILE")"
    for _ in $(seq 50); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.2; done
    echo "demo: hostd stopped"
  fi
  rm -f "$PIDFILE"
  bin/libvirtrun stop --root "$RUNDIR/libvirt"
  echo "demo: WorkSpaces' domains were stopped with libvirtd; their records and volumes stay in $STATE"
}

start() {
  mkdir -p "$STATE" "$RUNDIR"
  chmod 700 "$STATE" "$RUNDIR"
  bin/libvirtrun start --root "$RUNDIR/libvirt"
  # The VMs' bridges. netcfg owns them on an appliance; here they are plain bridges with
  # no uplink, so nothing a guest sends leaves this machine.
  for br in br-mgmt br-primary; do
    ip link show "$br" >/dev/null 2>&1 || ip link add "$br" type bridge
    ip link set "$br" up
  done
  if [ ! -f "$STATE/credentials" ]; then
    umask 077
    echo "ACCESS_KEY=AKDH$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)" > "$STATE/credentials"
    echo "SECRET_KEY=$(head -c 30 /dev/urandom | base64 | tr -d '/+=\n')" >> "$STATE/credentials"
  fi
  . "$STATE/credentials"
  sed -e "s|@STATE@|$STATE|g" -e "s|@RUNDIR@|$RUNDIR|g" -e "s|@IMAGE@|$PWD/$IMAGE|g" \
      -e "s|@ACCESS_KEY@|$ACCESS_KEY|g" -e "s|@SECRET_KEY@|$SECRET_KEY|g" configs/demo.yaml.in > "$CONFIG"
  chmod 600 "$CONFIG"
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "demo: hostd already running (pid $(cat "$PIDFILE"))"
  else
    nohup bin/hostd serve --config "$CONFIG" >> "$STATE/hostd.log" 2>&1 &
    echo $! > "$PIDFILE"
    echo "demo: hostd started (pid $!), log $STATE/hostd.log"
    for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.2; done
    [ -S "$SOCK" ] || { echo "demo: hostd did not open $SOCK; see $STATE/hostd.log"; tail -20 "$STATE/hostd.log"; exit 1; }
  fi
  catalog
  ws=$(demo_ws)
  if [ -z "$ws" ]; then
    hostd create --directory d-0123456789 --user demo --bundle "$(demo_bundle)" --wait
    ws=$(demo_ws)
  else
    hostd wait "$ws" --state AVAILABLE --timeout 10m
  fi
  virsh="virsh -c qemu:///system?socket=$RUNDIR/libvirt/run/libvirt-sock"
  $virsh screenshot "$ws" "$STATE/$ws.png" >/dev/null 2>&1 || true
  cat <<MSG

deskhost demo: WorkSpace $ws is AVAILABLE.

Look at it:
  bin/hostd workspaces --socket $SOCK              every WorkSpace and its state
  bin/hostd describe $ws --socket $SOCK
  $virsh screenshot $ws /tmp/$ws.png   its display (one was saved to $STATE/$ws.png)
  tail -f $STATE/run/$ws/serial.log                  its serial console
  VNC display (unix socket only):                    $STATE/run/$ws/vnc.sock

Drive it as an administrator would, with AWS's own CLI:
  . $STATE/credentials; AWS_ACCESS_KEY_ID=\$ACCESS_KEY AWS_SECRET_ACCESS_KEY=\$SECRET_KEY \\
    AWS_CA_BUNDLE=$STATE/tls/ca.pem /usr/bin/aws workspaces describe-workspaces \\
    --endpoint-url https://127.0.0.1:8443 --region local
  bin/hostd reboot $ws --socket $SOCK
  bin/hostd terminate $ws --socket $SOCK

Stop everything: make demo-stop
MSG
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop"; exit 2 ;;
esac
