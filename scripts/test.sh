#!/usr/bin/env bash
# Runs every test: installs the Debian packages the tests need when missing, builds, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
mount-helpers/prepare-host.sh
# docs/FORMAT.md's known-answer vectors, recomputed independently of the Swift code.
python3 -c 'import cryptography' 2>/dev/null || pip install -q cryptography
python3 docs/vectors.py >/dev/null && echo "docs/vectors.py: all vectors in docs/FORMAT.md match"
swift build --build-tests
swift test --skip-build
