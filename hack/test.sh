#!/usr/bin/env bash
# The whole test suite: installs what the tests need, builds, runs mocha.
# The last line of output is "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
exec npx mocha
