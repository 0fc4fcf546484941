#!/usr/bin/env bash
# Runs every test: installs the Debian packages the tests need when missing, builds, tests.
# The mount tests run on /dev/fuse, then the mount suites again on FUSE over io_uring where
# the kernel has it (MountedVolume reads EPOCHFS_TEST_TRANSPORT).
set -euo pipefail
cd "$(dirname "$0")/.."
mount-helpers/prepare-host.sh --io-uring
# docs/FORMAT.md's known-answer vectors, recomputed independently of the Swift code.
python3 -c 'import cryptography' 2>/dev/null || pip install -q cryptography
python3 docs/vectors.py >/dev/null && echo "docs/vectors.py: all vectors in docs/FORMAT.md match"
swift build --build-tests
# The .deb PackageTests installs: this debug build, with man pages the argument parser's plugin
# writes from it (its build is the one above, so nothing is rebuilt).
swift package plugin generate-manual --configuration debug --multi-page >/dev/null
scripts/package-deb.sh --binary "$(swift build --show-bin-path)/epochfs" --manual .build/plugins/GenerateManual/outputs/epochfs \
  --swift-runtime >/dev/null
EPOCHFS_TEST_TRANSPORT=dev_fuse swift test --skip-build
if grep -q Y /sys/module/fuse/parameters/enable_uring 2>/dev/null; then
  EPOCHFS_TEST_TRANSPORT=io_uring swift test --skip-build \
    --filter 'InFlightTests|PosixTests|ModelTests|WorkloadTests|IntegrityTests|ReencryptTests|FullDiskTests|RequestLimitTests|EtcdOnMountTests'
else
  echo "test.sh: no FUSE over io_uring in this kernel: the mount suites ran on /dev/fuse only"
fi
