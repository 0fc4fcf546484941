#!/usr/bin/env bash
# Builds epochfs (release) and installs it with its mount(8) helper and systemd template, as root:
#   /usr/local/bin/epochfs, /sbin/mount.fuse.epochfs (+ mount.epochfs), /etc/systemd/system/epochfs@.service,
#   /etc/systemd/system/epochfs-reconcile.service
set -euo pipefail
cd "$(dirname "$0")/.."
mount-helpers/prepare-host.sh
swift build -c release --product epochfs
install -m 0755 "$(swift build -c release --show-bin-path)/epochfs" /usr/local/bin/epochfs
install -m 0755 mount-helpers/mount.epochfs /sbin/mount.fuse.epochfs
ln -sf /sbin/mount.fuse.epochfs /sbin/mount.epochfs
install -m 0644 mount-helpers/epochfs@.service /etc/systemd/system/epochfs@.service
install -m 0644 mount-helpers/epochfs-reconcile.service /etc/systemd/system/epochfs-reconcile.service
mkdir -p /etc/epochfs && chmod 700 /etc/epochfs
command -v systemctl >/dev/null && systemctl daemon-reload 2>/dev/null || true
echo "installed: /usr/local/bin/epochfs, /sbin/mount.fuse.epochfs, epochfs@.service, epochfs-reconcile.service"
