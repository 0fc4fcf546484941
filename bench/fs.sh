#!/usr/bin/env bash
# File system benchmark: epochfs beside gocryptfs, bindfs (-o big_writes) and a plain directory,
# in one run on this machine, as ratios. Installs gocryptfs, bindfs and fio when missing and
# builds epochfs in release mode. Prints a table; see bench/fs.py for what is measured.
# Usage: bench/fs.sh [--runs N] [--size-mb N] [--random-seconds N] [--dir DIR] [--phases sequential,random,small,wal,names]
#                    [--epochfs-options OPTS] [--baseline OTHER_EPOCHFS_BINARY] [--baseline-options OPTS]
#                    [--peers gocryptfs,bindfs,plain,passthrough_hp] [--passthrough-hp BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
mount-helpers/prepare-host.sh
missing=()
for package in gocryptfs bindfs fio python3; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
((${#missing[@]} == 0)) || DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null
swift build -c release --product epochfs >/dev/null
exec python3 bench/fs.py --epochfs "$(swift build -c release --show-bin-path)/epochfs" "$@"
