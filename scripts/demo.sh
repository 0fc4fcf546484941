#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine, as root: prepare the host, build epochfs, create
# a demo volume with a generated key file, show it, rekey it, show it again.
# Usage: scripts/demo.sh [DIR]   (default /tmp/epochfs-demo; must not exist yet)
set -euo pipefail
cd "$(dirname "$0")/.."
mount-helpers/prepare-host.sh
swift build -c release --product epochfs
epochfs="$(swift build -c release --show-bin-path)/epochfs"

demo="${1:-/tmp/epochfs-demo}"
[[ ! -e "$demo" ]] || { echo "demo: $demo exists; pass another directory" >&2; exit 1; }
mkdir -p "$demo/keys" && chmod 700 "$demo/keys"
openssl rand -hex 32 > "$demo/keys/1.key"
openssl rand -hex 32 > "$demo/keys/2.key"

"$epochfs" init "$demo/backing" --key-source "file:$demo/keys/%d.key" --epoch 1
echo
"$epochfs" rekey "$demo/backing" 2
echo
"$epochfs" info "$demo/backing"
cat <<EOT

Demo volume: $demo/backing (keys in $demo/keys).
  show it:       $epochfs info $demo/backing [--json]
  rekey it:      openssl rand -hex 32 > $demo/keys/3.key && $epochfs rekey $demo/backing 3
  remove it:     rm -rf $demo
EOT
