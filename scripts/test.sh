#!/usr/bin/env bash
# Runs every test: installs the Debian packages the tests need when missing, builds, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
mount-helpers/prepare-host.sh
swift build --build-tests
swift test --skip-build
