#!/bin/bash
# The main job. Until the shim lands this checks the toolchain only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/setup.sh
.venv/bin/python -c 'import railcar.shim, railcar.runtime, railcar.io, railcar.ttrpc_proto; print("railcar installed")'
