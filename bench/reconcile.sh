#!/usr/bin/env bash
# Reconciler benchmark (issue 20): time from an etcd put of the epoch key to every volume at
# the new epoch, for 1, 3 and 10 offline volumes, and the idle reconciler's CPU and resident
# memory; see bench/reconcile.py. Builds epochfs in release mode.
# Usage: bench/reconcile.sh [--runs N] [--counts 1,3,10] [--idle-seconds N] [--dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
mount-helpers/prepare-host.sh
swift build -c release --product epochfs >/dev/null
exec python3 bench/reconcile.py --epochfs "$(swift build -c release --show-bin-path)/epochfs" "$@"
