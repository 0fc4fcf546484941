#!/usr/bin/env bash
# Prepares a Linux (Debian 12) test host for epochfs, as root: installs the Debian packages
# epochfs builds, mounts and is tested with when they are missing, and checks /dev/fuse.
# Usage: mount-helpers/prepare-host.sh [--allow-other]
#   --allow-other  also enable user_allow_other in /etc/fuse.conf
set -euo pipefail

packages=(fuse3 libfuse3-dev libssl-dev pkg-config openssl util-linux git sqlite3 tar etcd-server etcd-client
          golang-go golang-etcd-server-dev time)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "prepare-host: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y "${missing[@]}" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null; }
fi

if [[ ! -c /dev/fuse ]]; then
  modprobe fuse 2>/dev/null || true
  [[ -c /dev/fuse ]] || mknod -m 0666 /dev/fuse c 10 229
fi

if [[ "${1:-}" == "--allow-other" ]] && ! grep -q '^user_allow_other' /etc/fuse.conf 2>/dev/null; then
  echo user_allow_other >> /etc/fuse.conf
fi

command -v swift >/dev/null || { echo "prepare-host: the Swift 6 toolchain is not on PATH (swift.org/install/linux)" >&2; exit 1; }
