#!/usr/bin/env bash
# Re-encryption benchmark (issue 13): offline `epochfs reencrypt` of a 1 GiB volume beside the
# mount's sequential write speed, and random-read IOPS during an online re-encryption beside
# idle; see bench/reencrypt.py. Builds epochfs in release mode.
# Usage: bench/reencrypt.sh [--runs N] [--files N] [--file-mb N] [--random-seconds N] [--dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
mount-helpers/prepare-host.sh
swift build -c release --product epochfs >/dev/null
exec python3 bench/reencrypt.py --epochfs "$(swift build -c release --show-bin-path)/epochfs" "$@"
