#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine, as root: prepare the host, build epochfs (release),
# create a demo volume with a generated key file, mount it, write to it, rekey it live, and
# print how to use it.
# Usage: scripts/demo.sh [DIR]   (default /tmp/epochfs-demo; must not exist yet)
set -euo pipefail
cd "$(dirname "$0")/.."
mount-helpers/prepare-host.sh
swift build -c release --product epochfs
epochfs="$(swift build -c release --show-bin-path)/epochfs"

demo="${1:-/tmp/epochfs-demo}"
[[ ! -e "$demo" ]] || { echo "demo: $demo exists; pass another directory" >&2; exit 1; }
mkdir -p "$demo/keys" "$demo/mnt" && chmod 700 "$demo/keys"
openssl rand -hex 32 > "$demo/keys/1.key"
openssl rand -hex 32 > "$demo/keys/2.key"

"$epochfs" init "$demo/backing" --key-source "file:$demo/keys/%d.key" --epoch 1
"$epochfs" mount "$demo/backing" "$demo/mnt"   # a daemon; -f keeps it in the foreground
echo "hello from epochfs" > "$demo/mnt/hello.txt"
mkdir "$demo/mnt/notes" && date > "$demo/mnt/notes/today"
"$epochfs" rekey --mount "$demo/mnt" 2
echo
"$epochfs" status "$demo/mnt"
cat <<EOT

Mounted: $demo/mnt (plaintext)  <-  $demo/backing (ciphertext), keys in $demo/keys
  look:        ls -la $demo/mnt $demo/backing; cat $demo/mnt/hello.txt
  status:      $epochfs status $demo/mnt [--json]
  rekey live:  openssl rand -hex 32 > $demo/keys/3.key && $epochfs rekey --mount $demo/mnt 3
  unmount:     fusermount3 -u $demo/mnt
  mount again: $epochfs mount $demo/backing $demo/mnt
EOT
