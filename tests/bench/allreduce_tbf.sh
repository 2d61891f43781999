#!/usr/bin/env bash
# All-reduce over a bandwidth-limited link: fp32 against the wire codecs.
#
#   tests/bench/allreduce_tbf.sh [RATE] [BYTES] [ITERATIONS]   (defaults: 100mbit, 64 MiB, 2)
#
# As root: makes two network namespaces joined by a veth pair whose both
# ends are shaped with `tc ... tbf` to RATE, runs one potluck rank in each
# (potluck's TCP backend) for each codec, prints the times, and removes the
# namespaces again. Addresses 10.77.0.1/2 exist only inside those namespaces.
set -euo pipefail
rate=${1:-100mbit}
bytes=${2:-67108864}
iterations=${3:-2}
root=$(cd "$(dirname "$0")/../.." && pwd)
potluck=$root/build/bin/potluck
for tool in ip tc; do
  command -v $tool >/dev/null || { echo "needs '$tool' (apt-get install iproute2)" >&2; exit 1; }
done
[[ -x $potluck ]] || { echo "build potluck first ($potluck)" >&2; exit 1; }

ns0=potluck-bench-0 ns1=potluck-bench-1
store=$(mktemp -d)
remove_namespaces() {
  ip netns del $ns0 2>/dev/null || true
  ip netns del $ns1 2>/dev/null || true
}
trap 'remove_namespaces; rm -rf "$store"' EXIT
remove_namespaces  # left over from an interrupted run
ip netns add $ns0
ip netns add $ns1
ip link add pl-veth0 netns $ns0 type veth peer name pl-veth1 netns $ns1
ip -n $ns0 addr add 10.77.0.1/24 dev pl-veth0
ip -n $ns1 addr add 10.77.0.2/24 dev pl-veth1
for ns in $ns0 $ns1; do ip -n $ns link set lo up; done
ip -n $ns0 link set pl-veth0 up
ip -n $ns1 link set pl-veth1 up
ip netns exec $ns0 tc qdisc add dev pl-veth0 root tbf rate "$rate" burst 64kb latency 400ms
ip netns exec $ns1 tc qdisc add dev pl-veth1 root tbf rate "$rate" burst 64kb latency 400ms

echo "all-reduce of $bytes bytes, 2 ranks across a veth link shaped to $rate, $iterations timed iterations"
declare -A seconds
for codec in none bf16 int8; do
  rm -rf "$store"/*
  common=(bench allreduce-rank --backend tcp --ranks 2 --sizes "$bytes" --store "$store"
          --codec "$codec" --iterations "$iterations")
  ip netns exec $ns1 "$potluck" "${common[@]}" --rank 1 --bind 10.77.0.2 >/dev/null &
  line=$(ip netns exec $ns0 "$potluck" "${common[@]}" --rank 0 --bind 10.77.0.1)
  wait
  echo "  $line"
  seconds[$codec]=$(sed -E 's/.*"time_us":([0-9.e+]+).*/\1/' <<<"$line")
done
for codec in bf16 int8; do
  awk -v a="${seconds[none]}" -v b="${seconds[$codec]}" -v c="$codec" \
    'BEGIN { printf "  %s is %.2fx faster than fp32\n", c, a / b }'
done
