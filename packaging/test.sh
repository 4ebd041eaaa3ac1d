#!/bin/bash
# Runs railcar's whole test suite (unit and integration, against the real kernel and a private
# containerd the tests start themselves). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/setup.sh
exec .venv/bin/pytest "$@"
