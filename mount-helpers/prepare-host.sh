#!/usr/bin/env bash
# Prepares a Linux (Debian 12) test host for epochfs, as root: installs the Debian packages
# epochfs builds, mounts and is tested with when they are missing, and checks /dev/fuse.
# Usage: mount-helpers/prepare-host.sh [--allow-other] [--io-uring]
#   --allow-other  also enable user_allow_other in /etc/fuse.conf
#   --io-uring     also turn on the kernel's FUSE over io_uring (Linux 6.14+), which mounts
#                  then use unless given -o io_uring=off
set -euo pipefail

allow_other=0 io_uring=0
for argument in "$@"; do
  case "$argument" in
    --allow-other) allow_other=1 ;;
    --io-uring) io_uring=1 ;;
    *) echo "usage: prepare-host.sh [--allow-other] [--io-uring]" >&2; exit 64 ;;
  esac
done

packages=(fuse3 libfuse3-dev liburing-dev libssl-dev pkg-config openssl util-linux git sqlite3 tar etcd-server etcd-client
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

if ((allow_other)) && ! grep -q '^user_allow_other' /etc/fuse.conf 2>/dev/null; then
  echo user_allow_other >> /etc/fuse.conf
fi

if ((io_uring)); then
  parameter=/sys/module/fuse/parameters/enable_uring
  [[ -w "$parameter" ]] && { echo Y > "$parameter"; } 2>/dev/null || true
  grep -q Y "$parameter" 2>/dev/null \
    || echo "prepare-host: this kernel has no FUSE over io_uring (Linux 6.14+ with CONFIG_FUSE_IO_URING), or it cannot be turned on" >&2
fi

command -v swift >/dev/null || { echo "prepare-host: the Swift 6 toolchain is not on PATH (swift.org/install/linux)" >&2; exit 1; }
