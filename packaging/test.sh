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
    # containerd's root must be on a tmpfs there (its snapshotter cannot stack on the guest's
    # overlay root), and the CRI tests' CNI bridge needs the veth and bridge modules.
    "$guest/run.sh" 'mkdir -p /mnt/t && mount -t tmpfs tmpfs /mnt/t &&
        "$V2GUEST_KIT/bb/bin/busybox" modprobe veth && "$V2GUEST_KIT/bb/bin/busybox" modprobe bridge &&
        TMPDIR=/mnt/t .venv/bin/pytest -p no:cacheprovider --basetemp=/mnt/t/pytest -m cgroup_v2 tests'
else
    echo "test.sh: WARNING: $guest not found, so the cgroup v2 tests did not run (they need a pure v2 kernel)" >&2
    [ -z "${CI:-}" ] || exit 1
fi
