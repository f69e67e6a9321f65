#!/usr/bin/env bash
# netcfg benchmarks, with the baselines measured in the same run (these
# machines are noisy: compare ratios, not absolute figures).
#
#   1. library: Apply of a ruleset with 100,000 ACL ranges vs `nft -f` of the
#      same ruleset (fresh and replacing), and a one-rule change with 100,000
#      loaded (go test -bench in netcfg/firewall);
#   2. library: the whole reconcile.Apply hostd calls (validation, links,
#      nftables, conntrack) for a one-rule change and for no change;
#   3. whole process: `netcfg apply --config` (100,000 CIDRs of YAML) vs
#      `nft -f` of the ruleset it produced, each in a fresh namespace.
#
# Needs root, iproute2, nftables and Go. Everything runs in namespaces this
# script creates and deletes. Usage: scripts/bench/netcfg.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
[ "$(id -u)" = 0 ] || { echo "netcfg bench: needs root" >&2; exit 1; }
for b in ip nft go; do command -v $b >/dev/null || { echo "netcfg bench: needs $b" >&2; exit 1; }; done

work=$(mktemp -d)
tag=ncb$$
cleanup() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$tag" || true); do ip netns del "$ns"; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== 1. firewall library vs nft -f (go test -bench, ratios in the same run)"
go test ./netcfg/firewall -run '^$' -bench 'Load100k|ChangeOneRule100k' -benchtime 5x | grep -E '^Benchmark|^ok'
echo
echo "== 2. reconcile.Apply (what hostd calls), 100,000 CIDRs in 20 groups, 10 WorkSpaces"
go test ./netcfg/reconcile -run '^$' -bench 'ApplyOneRuleChange100k|ApplyNoChange100k' -benchtime 200x | grep -E '^Benchmark|^ok'
echo

echo "== 3. whole process: netcfg apply --config (YAML) vs nft -f"
go build -o "$work/netcfg" ./netcfg
go build -o "$work/benchgen" ./netcfg/internal/benchgen
"$work/benchgen" -state "$work/state.json" > "$work/big.yaml"
"$work/benchgen" -state "$work/state.json" -change 1234 > "$work/big1.yaml"
mkns() { # name: a namespace with eth0/eth1 (peers in name-p)
  ip netns add "$1"; ip netns add "$1-p"
  ip -n "$1" link set lo up
  ip -n "$1" link add eth0 type veth peer name p0 netns "$1-p"
  ip -n "$1" link add eth1 type veth peer name p1 netns "$1-p"
}
ms() { echo $(( ($2 - $1) / 1000000 )); }
tot_ours=0; tot_nft=0
for i in $(seq 1 "$rounds"); do
  rm -f "$work/state.json"
  mkns "${tag}a$i"; mkns "${tag}b$i"
  t0=$(date +%s%N)
  "$work/netcfg" apply --config "$work/big.yaml" --netns "${tag}a$i" --log-level warn >/dev/null
  t1=$(date +%s%N)
  ip netns exec "${tag}a$i" nft list table inet deskhost > "$work/ruleset.nft"
  ip netns exec "${tag}a$i" nft list table bridge deskhost >> "$work/ruleset.nft"
  t2=$(date +%s%N)
  nsenter --net="/run/netns/${tag}b$i" nft -f "$work/ruleset.nft"
  t3=$(date +%s%N)
  ours=$(ms $t0 $t1); nft=$(ms $t2 $t3)
  tot_ours=$((tot_ours + ours)); tot_nft=$((tot_nft + nft))
  echo "round $i: netcfg apply (cold process: YAML decode, validate, links, one transaction) ${ours} ms; nft -f of its ruleset ${nft} ms"
  if [ "$i" = 1 ]; then
    t0=$(date +%s%N)
    "$work/netcfg" apply --config "$work/big.yaml" --netns "${tag}a$i" --log-level warn >/dev/null
    t1=$(date +%s%N)
    "$work/netcfg" apply --config "$work/big1.yaml" --netns "${tag}a$i" --log-level warn >/dev/null
    t2=$(date +%s%N)
    "$work/netcfg" check --config "$work/big1.yaml" --netns "${tag}a$i" --log-level warn >/dev/null
    t3=$(date +%s%N)
    echo "         netcfg apply, no change (new process reads 100,000 ranges back): $(ms $t0 $t1) ms;" \
         "one rule changed: $(ms $t1 $t2) ms; netcfg check: $(ms $t2 $t3) ms"
  fi
  ip netns del "${tag}a$i"; ip netns del "${tag}a$i-p"; ip netns del "${tag}b$i"; ip netns del "${tag}b$i-p"
done
awk -v o="$tot_ours" -v n="$tot_nft" -v r="$rounds" 'BEGIN { printf "whole process over %d rounds: netcfg %.0f ms, nft -f %.0f ms, ratio %.2f\n", r, o/r, n/r, o/n }'
