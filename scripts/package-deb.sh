#!/usr/bin/env bash
# Builds epochfs_VERSION_ARCH.deb for a test host with dpkg-deb: the binary (the Swift runtime
# linked in), the mount(8) helper, the systemd units, and shell completions and man pages
# generated from the argument parser. The version is the one `epochfs --version` prints
# (EpochFS.version in Sources/epochfs/EpochFS.swift, the one place it is written).
#
# Usage: scripts/package-deb.sh [--binary PATH --manual DIR [--swift-runtime]] [--output DIR]
#   --binary PATH    package this epochfs instead of building one
#   --manual DIR     its man pages (*.1), as the argument parser's generate-manual plugin made them
#   --swift-runtime  the binary links the Swift runtime of this machine's toolchain (a debug build,
#                    for the tests): those libraries are not Debian's and are left out of Depends;
#                    such a package installs only where that toolchain is
#   --output DIR     where the .deb goes (default .build/deb)
# Without --binary, it builds in .build-deb: a release build with the Swift runtime linked in,
# made by the argument parser's generate-manual plugin, which writes the man pages from it.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="" manual="" output=".build/deb" swift_runtime=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --manual) manual="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    --swift-runtime) swift_runtime="$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")"; shift ;;
    *) echo "usage: scripts/package-deb.sh [--binary PATH --manual DIR [--swift-runtime]] [--output DIR]" >&2; exit 64 ;;
  esac
done
if [[ -n "$binary" && -z "$manual" ]] || [[ -z "$binary" && -n "$manual" ]]; then
  echo "package-deb: --binary and --manual go together" >&2; exit 64
fi
if [[ -z "$binary" ]]; then
  # (`swift package` has no --static-swift-stdlib; -static-stdlib reaches the plugin's build.)
  swift package --scratch-path .build-deb -Xswiftc -static-stdlib plugin generate-manual --configuration release --multi-page >&2
  binary=".build-deb/release/epochfs"
  manual=".build-deb/plugins/GenerateManual/outputs/epochfs"
fi

# "epochfs 0.19.0 (writes volume format 4, docs/FORMAT.md)"
version="$("$binary" --version | awk '{ print $2 }')"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "package-deb: cannot read a version from $binary --version" >&2; exit 1; }
architecture="$(dpkg --print-architecture)"
ls "$manual"/*.1 >/dev/null || { echo "package-deb: no man pages in $manual" >&2; exit 1; }

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/epochfs_${version}_$architecture"
install -D -m 0755 "$binary" "$root/usr/bin/epochfs"
strip --strip-unneeded "$root/usr/bin/epochfs"
# The package's paths: the helper and the units run /usr/bin/epochfs (install.sh's are /usr/local).
install -d "$root/usr/sbin" "$root/lib/systemd/system"
sed 's|^epochfs=.*|epochfs="${EPOCHFS_BIN:-/usr/bin/epochfs}"|' mount-helpers/mount.epochfs > "$root/usr/sbin/mount.fuse.epochfs"
chmod 0755 "$root/usr/sbin/mount.fuse.epochfs"
ln -s mount.fuse.epochfs "$root/usr/sbin/mount.epochfs"
for unit in epochfs@.service epochfs-reconcile.service; do
  sed 's|/usr/local/bin/epochfs|/usr/bin/epochfs|g' "mount-helpers/$unit" > "$root/lib/systemd/system/$unit"
  chmod 0644 "$root/lib/systemd/system/$unit"
done
install -d -m 0700 "$root/etc/epochfs"
install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d" "$root/usr/share/man/man1" "$root/usr/share/doc/epochfs"
"$binary" --generate-completion-script bash > "$root/usr/share/bash-completion/completions/epochfs"
"$binary" --generate-completion-script zsh > "$root/usr/share/zsh/vendor-completions/_epochfs"
"$binary" --generate-completion-script fish > "$root/usr/share/fish/vendor_completions.d/epochfs.fish"
for page in "$manual"/*.1; do gzip -9n < "$page" > "$root/usr/share/man/man1/$(basename "$page").gz"; done
gzip -9n < README.md > "$root/usr/share/doc/epochfs/README.md.gz"
# README's links point into docs/: the pages go beside it, as README.md does.
install -d "$root/usr/share/doc/epochfs/docs"
for page in docs/*.md; do gzip -9n < "$page" > "$root/usr/share/doc/epochfs/docs/$(basename "$page").gz"; done

# Depends: the Debian package of every shared library the binary needs, and fusermount3's.
depends=(fuse3)
for library in $(ldd "$root/usr/bin/epochfs" | awk '/=> \// { print $3 }'); do
  [[ -n "$swift_runtime" && "$(readlink -f "$library")" == "$swift_runtime"/* ]] && continue
  owner="$(dpkg -S "$library" 2>/dev/null | head -1 | cut -d: -f1 || true)"
  [[ -n "$owner" ]] || owner="$(dpkg -S "$(readlink -f "$library")" 2>/dev/null | head -1 | cut -d: -f1 || true)"
  [[ -n "$owner" ]] || { echo "package-deb: no Debian package has $library (is the Swift runtime linked in?)" >&2; exit 1; }
  [[ " ${depends[*]} " == *" $owner "* ]] || depends+=("$owner")
done

install -d "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: epochfs
Version: $version
Architecture: $architecture
Maintainer: epochfs developers <epochfs@localhost>
Depends: $(IFS=,; echo "${depends[*]}" | sed "s/,/, /g")
Section: admin
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Description: encrypted FUSE filesystem with epoch-keyed blocks and atomic rekey
 epochfs mounts an encrypted backing directory; every block names the key epoch
 that sealed it, so that a rekey is one header commit and re-encryption runs
 while the volume serves. Includes the mount.fuse.epochfs helper, systemd units,
 shell completions and man pages.
CONTROL

mkdir -p "$output"
dpkg-deb --root-owner-group --build "$root" "$output/epochfs_${version}_$architecture.deb" >&2
echo "$output/epochfs_${version}_$architecture.deb"
