#!/usr/bin/env bash
# Seal/open throughput of 4 KiB storage envelopes on one core, beside `openssl speed` on the
# same core, as ratios; each figure is the median of 3 alternating runs. Target (issue 3):
# ratio >= 0.8.
# Usage: bench/crypto.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-3}"
core=0
runs=3

swift build -c release --product epochfs-bench >/dev/null
bench="$(swift build -c release --show-bin-path)/epochfs-bench"

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

openssl_runs=() seal_runs=() open_runs=()
for _ in $(seq $runs); do
  # openssl speed prints "AES-256-GCM  <N>k" with N in 1000s of bytes per second.
  kbps=$(taskset -c $core openssl speed -evp aes-256-gcm -bytes 4096 -seconds "$seconds" 2>/dev/null \
    | awk '/^AES-256-GCM/ { sub(/k$/, "", $NF); print $NF }')
  openssl_runs+=("$(awk -v k="$kbps" 'BEGIN { printf "%d", k / 1000 }')")
  figures=$(taskset -c $core "$bench" "$seconds")
  seal_runs+=("$(awk '/^seal_mbps/ { print $2 }' <<<"$figures")")
  open_runs+=("$(awk '/^open_mbps/ { print $2 }' <<<"$figures")")
done
openssl_mbps=$(printf '%s\n' "${openssl_runs[@]}" | median)
seal_mbps=$(printf '%s\n' "${seal_runs[@]}" | median)
open_mbps=$(printf '%s\n' "${open_runs[@]}" | median)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), core $core, median of $runs runs of ${seconds}s"
echo "openssl speed -evp aes-256-gcm -bytes 4096:  $openssl_mbps MB/s  (runs: ${openssl_runs[*]})"
echo "epochfs seal 4 KiB storage envelope:         $seal_mbps MB/s  ratio $(ratio "$seal_mbps" "$openssl_mbps")  (runs: ${seal_runs[*]})"
echo "epochfs open 4 KiB storage envelope:         $open_mbps MB/s  ratio $(ratio "$open_mbps" "$openssl_mbps")  (runs: ${open_runs[*]})"
