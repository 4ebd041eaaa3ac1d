#!/bin/bash
# Runs railcar's whole test suite: unit and integration tests on this host (real kernel, a private
# containerd the tests start themselves), then the cgroup-v2-only tests on a pure cgroup v2 kernel
# (this host's controllers are v1), booted by ../shared/tools/cgroup2-guest. Extra arguments go to
# the host pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/setup.sh
.venv/bin/pytest "$@"

guest=../shared/tools/cgroup2-guest
if [ -x "$guest/run.sh" ]; then
    "$guest/setup.sh" >&2
    "$guest/run.sh" '.venv/bin/pytest -p no:cacheprovider -m cgroup_v2 tests'
else
    echo "test.sh: WARNING: $guest not found, so the cgroup v2 tests did not run (they need a pure v2 kernel)" >&2
    [ -z "${CI:-}" ] || exit 1
fi
