#!/usr/bin/env bash
# The WAL reader on 256 MB of etcd segments with every entry wrapped (1 KiB payloads):
# `epochfs wal verify` and `epochfs wal dump --cutover 0 --raft-key ...` in MB/s and peak RSS,
# beside `openssl speed -evp aes-256-gcm` at the payload size and etcd 3.4's own `wal.Verify`
# and `ReadAll` (bench/etcd-wal-reader, built offline with Debian's golang-go and
# golang-etcd-server-dev). Every process runs pinned to one core; each figure is the median of
# 5 runs; the segments are in the page cache. MB = 10^6 bytes, as `openssl speed` counts.
# Targets (issue 5): dump >= 0.5 x AES-GCM; verify >= 1.5 x wal.Verify; RSS <= 64 MB.
# Usage: bench/wal.sh   (EPOCHFS_SCRATCH_PATH picks the release build folder, default .build)
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="${EPOCHFS_SCRATCH_PATH:-.build}"
work="${TMPDIR:-/tmp}/epochfs-bench-wal"
total_bytes=256000000
payload=1024
core=0
runs=5

for tool in /usr/bin/time /usr/bin/go openssl taskset; do
  command -v "$tool" >/dev/null || { echo "wal.sh: $tool missing; run mount-helpers/prepare-host.sh" >&2; exit 1; }
done
[[ -d /usr/share/gocode/src/go.etcd.io/etcd/wal ]] || { echo "wal.sh: golang-etcd-server-dev missing; run mount-helpers/prepare-host.sh" >&2; exit 1; }

# Swift builds share the machine: one at a time.
build() { flock /tmp/epochfs-swift-build.lock swift build -c release --scratch-path "$scratch" "$@" >/dev/null; }
build --product epochfs
build --product epochfs-walgen
bin="$(swift build -c release --scratch-path "$scratch" --show-bin-path)"

# etcd's reader, from source, offline: GOPATH mode over Debian's packaged Go sources.
rm -rf "$work" && mkdir -p "$work/gopath/src/etcd-wal-reader"
cp bench/etcd-wal-reader/main.go "$work/gopath/src/etcd-wal-reader/"
GO111MODULE=off GOFLAGS= GOPATH="$work/gopath:/usr/share/gocode" GOCACHE="${TMPDIR:-/tmp}/epochfs-bench-gocache" CGO_ENABLED=0 \
  go build -o "$work/etcd-wal-reader" etcd-wal-reader

openssl rand -hex 32 > "$work/raft1.key"
"$bin/epochfs-walgen" "$work/segments" "$total_bytes" "$payload" "$work/raft1.key" >/dev/null
segment_bytes=$(cat "$work"/segments/*.wal | wc -c)
cat "$work"/segments/*.wal > /dev/null # into the page cache

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# Runs a command pinned to the core under /usr/bin/time -v; prints "MB/s peak-RSS-MB".
measure() {
  taskset -c $core /usr/bin/time -v -o "$work/time.txt" "$@" >/dev/null
  awk -v bytes="$segment_bytes" '
    /Elapsed \(wall clock\)/ { n = split($NF, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i] }
    /Maximum resident set size/ { rss = $NF / 1024 }
    END { printf "%.0f %.1f\n", bytes / s / 1e6, rss }' "$work/time.txt"
}

declare -A rate rss
names=(openssl verify dump etcd_verify etcd_readall)
for name in "${names[@]}"; do rate[$name]=""; rss[$name]=""; done
for _ in $(seq $runs); do
  # openssl speed prints "AES-256-GCM  <N>k" with N in 1000s of bytes per second.
  kbps=$(taskset -c $core openssl speed -evp aes-256-gcm -bytes $payload -seconds 3 2>/dev/null \
    | awk '/^AES-256-GCM/ { sub(/k$/, "", $NF); print $NF }')
  rate[openssl]+="$(awk -v k="$kbps" 'BEGIN { printf "%d", k / 1000 }') "
  for name in verify dump etcd_verify etcd_readall; do
    case $name in
      verify) set -- "$bin/epochfs" wal verify "$work/segments" ;;
      dump) set -- "$bin/epochfs" wal dump "$work/segments" --cutover 0 --raft-key "1:$work/raft1.key" ;;
      etcd_verify) set -- "$work/etcd-wal-reader" verify "$work/segments" ;;
      etcd_readall) set -- "$work/etcd-wal-reader" readall "$work/segments" ;;
    esac
    read -r r m < <(measure "$@")
    rate[$name]+="$r "
    rss[$name]+="$m "
  done
done
figure() { tr ' ' '\n' <<<"${1% }" | median; }
for name in "${names[@]}"; do
  declare "${name}_rate=$(figure "${rate[$name]}")"
  [[ $name == openssl ]] || declare "${name}_rss=$(figure "${rss[$name]}")"
done

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), core $core; $segment_bytes bytes in $(ls "$work"/segments/*.wal | wc -l) segments, ${payload}-byte payloads, every entry wrapped; median of $runs runs"
printf '%-58s %6s MB/s  (runs: %s)\n' "openssl speed -evp aes-256-gcm -bytes $payload" "$openssl_rate" "${rate[openssl]% }"
printf '%-58s %6s MB/s  ratio to AES-GCM %s (target >= 0.5), peak RSS %s MB  (runs: %s)\n' \
  "epochfs wal dump --cutover 0 --raft-key 1:KEY" "$dump_rate" "$(ratio "$dump_rate" "$openssl_rate")" "$dump_rss" "${rate[dump]% }"
printf '%-58s %6s MB/s  ratio to wal.Verify %s (target >= 1.5), peak RSS %s MB  (runs: %s)\n' \
  "epochfs wal verify" "$verify_rate" "$(ratio "$verify_rate" "$etcd_verify_rate")" "$verify_rss" "${rate[verify]% }"
printf '%-58s %6s MB/s  peak RSS %s MB  (runs: %s)\n' "etcd 3.4 wal.Verify" "$etcd_verify_rate" "$etcd_verify_rss" "${rate[etcd_verify]% }"
printf '%-58s %6s MB/s  peak RSS %s MB  (runs: %s)\n' "etcd 3.4 wal.OpenForRead + ReadAll" "$etcd_readall_rate" "$etcd_readall_rss" "${rate[etcd_readall]% }"
rm -rf "$work"
